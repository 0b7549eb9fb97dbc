"""Miras Table 3 (arXiv 2504.13173 v1): RULER single-needle S-NIAH at 1K to 8K.

The paper does not state the model size; secondary sources assume 760M, so the runs are Table 2's 760M rows
(``trained_in="table2"``: ``python -m miras eval`` reads their checkpoints, nothing is trained for this table).
Column groups: PK = S-NIAH-PK (passkey in a repeated-noise haystack, RULER ``niah_single_1``), N = S-NIAH-N
(number in an essay haystack, ``niah_single_2``), W = S-NIAH-W, read as RULER's third single-needle task
(``niah_single_3``, a UUID in an essay haystack); the paper names the groups only. Accuracy is RULER's
string-match over the greedy answer, in %. Numbers from Miras v1 Table 3; the paper's
"Average" column is left out because its Miras rows are not the mean of their cells (93.5 / 92.9 / 92.1
against 93.31 / 92.51 / 92.49).

The paper's lengths are paper-scale columns (``Column.only_at``). A tiny model is trained at a 256-token context,
so tiny and smoke have their own columns: PK and N at 256 and 384 tokens, W at 384 (RULER reserves 128 tokens for
the answer, so their prompts are about 100-120 and 230-250 tokens long, within the training context; W's UUID
needle does not fit 256). The claims are checked at each scale on its longest columns. The rows that Table 2 trains
with three seeds are evaluated on each of them.
"""

from miras.experiment import Claim, Column, Run, Table

GROUP = "S-NIAH (size not stated; Table 2's 760M models)"
TASKS = {
    "PK": ("niah_single_1", (2048, 4096, 8192)),
    "N": ("niah_single_2", (2048, 4096, 8192)),
    "W": ("niah_single_3", (1024, 2048, 4096)),
}
TINY_TASKS = {"PK": (256, 384), "N": (256, 384), "W": (384,)}
"""The S-NIAH lengths of tiny and smoke (prompt + answer + RULER's 128 reserved tokens)."""
FULL, THINNED = ("paper", "small"), ("tiny", "smoke")


def _column(group: str, length: int, only_at: tuple[str, ...]) -> Column:
    title = f"{group} {length // 1024}K" if length % 1024 == 0 else f"{group} {length}"
    return Column(f"eval/{TASKS[group][0]}/{length}", title, scale=100, only_at=only_at)


PAPER_COLUMNS = tuple(_column(group, length, FULL) for group, (_, lengths) in TASKS.items() for length in lengths)
COLUMNS = PAPER_COLUMNS + tuple(
    _column(group, length, THINNED) for group, lengths in TINY_TASKS.items() for length in lengths
)
LABELS = {
    "mamba2": "Mamba2",
    "deltanet": "DeltaNet",
    "gated_deltanet": "Gated DeltaNet",
    "ttt": "TTT",
    "moneta": "Moneta",
    "yaad": "Yaad",
    "memora": "Memora",
}
# PK 2K 4K 8K, N 2K 4K 8K, W 1K 2K 4K
PAPER = {
    "mamba2": (98.6, 61.4, 31.0, 98.4, 55.8, 14.2, 62.2, 42.2, 4.2),
    "deltanet": (96.8, 98.8, 98.6, 47.2, 15.4, 12.8, 85.2, 46.2, 20.0),
    "gated_deltanet": (89.8, 91.4, 90.0, 99.2, 91.8, 26.4, 86.4, 82.6, 24.4),
    "ttt": (98.4, 98.8, 98.0, 60.2, 36.6, 10.2, 85.8, 78.8, 28.0),
    "moneta": (99.4, 98.8, 98.8, 99.4, 99.4, 92.8, 92.2, 88.2, 70.8),
    "yaad": (99.2, 98.6, 94.4, 99.8, 98.6, 93.2, 91.8, 89.6, 67.4),
    "memora": (99.2, 98.8, 92.6, 98.4, 99.2, 93.2, 92.4, 88.2, 70.4),
}

MIRAS = ("moneta-760m", "yaad-760m", "memora-760m")
BASELINES = ("mamba2-760m", "deltanet-760m", "gated_deltanet-760m", "ttt-760m")
SEEDED = ("gated_deltanet", "moneta", "yaad", "memora")
"""The rows Table 2 trains with seeds 0, 1 and 2 at 760M (``experiments/miras/table2.py``)."""


def _claims(n: int, w: int, pk: int, longest: str, only_at: tuple[str, ...]) -> tuple[Claim, ...]:
    return (
        Claim(f"Moneta, Yaad and Memora each find the longest number needle (N {longest}) more often than every "
              "baseline", "Table 3", f"eval/niah_single_2/{n}", MIRAS, BASELINES, only_at=only_at),
        Claim(f"Moneta, Yaad and Memora each find the longest word needle (W {longest}) more often than every "
              "baseline", "Table 3", f"eval/niah_single_3/{w}", MIRAS, BASELINES, only_at=only_at),
        Claim(f"Moneta is the best model on the passkey task at its longest length ({longest}; synthetic noise, "
              "S-NIAH-PK)", "Table 3, section 6.3", f"eval/niah_single_1/{pk}", ("moneta-760m",),
              (*BASELINES, "yaad-760m", "memora-760m"), only_at=only_at),
    )  # fmt: skip


CLAIMS = _claims(8192, 4096, 8192, "8K and 4K", FULL) + _claims(384, 384, 384, "384 tokens", THINNED)

TABLE = Table(
    paper="miras",
    key="table3_niah",
    title="Needle in a haystack (RULER S-NIAH)",
    source="Miras, arXiv 2504.13173 v1, Table 3",
    columns=COLUMNS,
    runs=tuple(
        Run(f"{mixer}-760m", LABELS[mixer], GROUP, f"{mixer}-780m", params=760e6,
            seeds=(0, 1, 2) if mixer in SEEDED else (0,))
        for mixer in PAPER
    ),  # fmt: skip
    paper_numbers={
        (f"{mixer}-760m", column.key): value
        for mixer, values in PAPER.items()
        for column, value in zip(PAPER_COLUMNS, values, strict=True)
    },
    trained_in="table2",
    claims=CLAIMS,
    references=("gated_deltanet-760m",),
    notes=(
        "Model size not stated in the paper; evaluated on Table 2's 760M runs.",
        "W is read as RULER's niah_single_3 (UUID needle); the paper names the column group only.",
        "At tiny and smoke the lengths are 256 and 384 tokens (prompt, answer and RULER's 128 reserved tokens), so "
        "every prompt fits the 256-token training context of a tiny model; the paper's lengths are left out.",
        "The paper's Average column is omitted: its Miras averages are not the mean of their cells.",
    ),
)
