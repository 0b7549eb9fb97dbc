"""Miras Table 2 (arXiv 2504.13173 v1): language modelling and zero-shot common-sense reasoning.

Paper numbers transcribed from the v1 table (Miras, arXiv 2504.13173 v1, Table 2). Baseline rows are the
paper's copies of Titans (340M, 760M) and Gated DeltaNet (1.3B) results; the authors did not retrain them.
Columns are lm-evaluation-harness zero-shot metrics; accuracies are percentages in the paper and fractions
in lm-eval, hence ``scale=100``.
"""

from miras.experiment import Claim, Column, Run, Table

COLUMNS = (
    Column("val/ppl", "Val ppl", higher_is_better=False),
    Column("eval/wikitext/word_perplexity", "Wiki ppl", higher_is_better=False),
    Column("eval/lambada_openai/perplexity", "LMB ppl", higher_is_better=False),
    Column("eval/lambada_openai/acc", "LMB acc", scale=100),
    Column("eval/piqa/acc", "PIQA acc", scale=100),
    Column("eval/hellaswag/acc_norm", "Hella acc_n", scale=100),
    Column("eval/winogrande/acc", "Wino acc", scale=100),
    Column("eval/arc_easy/acc", "ARC-e acc", scale=100),
    Column("eval/arc_challenge/acc_norm", "ARC-c acc_n", scale=100),
    Column("eval/social_iqa/acc", "SIQA acc", scale=100),
    Column("eval/boolq/acc", "BoolQ acc", scale=100),
    Column("eval/avg/acc", "Avg acc", scale=100),
)
"""The last column is not in v1: the mean of the eight accuracies, as the ICLR version's Avg is (our lm-eval
runs log the same mean as ``eval/avg/acc``)."""

LABELS = {
    "transformer": "Transformer++",
    "retnet": "RetNet",
    "gla": "GLA",
    "mamba": "Mamba",
    "mamba2": "Mamba2",
    "deltanet": "DeltaNet",
    "ttt": "TTT",
    "gated_deltanet": "Gated DeltaNet",
    "samba": "Samba*",
    "gated_deltanet_h2": "Gated DeltaNet-H2*",
    "moneta": "Moneta",
    "yaad": "Yaad",
    "memora": "Memora",
    "moneta_h": "Moneta-H*",
    "yaad_h": "Yaad-H*",
    "memora_h": "Memora-H*",
}

# Wiki ppl, LMB ppl, LMB acc, PIQA, Hella, Wino, ARC-e, ARC-c, SIQA, BoolQ
PAPER = {
    ("340M params / 15B tokens", "340m", "340m", 340e6): {
        "transformer": (31.52, 41.08, 30.76, 62.98, 34.76, 50.53, 45.21, 24.05, 36.81, 58.24),
        "retnet": (32.50, 49.73, 28.24, 62.61, 34.15, 50.91, 44.27, 23.62, 36.79, 59.72),
        "gla": (28.51, 43.02, 28.73, 64.05, 35.96, 50.00, 54.19, 24.29, 37.13, 58.39),
        "mamba": (30.83, 40.21, 29.94, 63.79, 35.88, 49.82, 49.24, 24.56, 35.41, 60.07),
        "deltanet": (28.65, 47.30, 28.43, 63.52, 35.95, 49.63, 52.68, 25.37, 37.96, 58.79),
        "ttt": (27.44, 34.19, 30.06, 63.97, 35.71, 50.08, 53.01, 26.11, 37.32, 59.83),
        "gated_deltanet": (27.01, 30.94, 34.11, 63.08, 38.12, 51.60, 55.28, 26.77, 34.89, 59.54),
        "moneta": (26.19, 29.31, 35.70, 63.99, 39.23, 52.04, 55.96, 27.15, 37.29, 60.22),
        "yaad": (26.61, 29.11, 34.09, 64.93, 39.86, 51.12, 54.75, 28.64, 33.82, 60.29),
        "memora": (27.16, 30.44, 33.68, 65.21, 39.17, 51.23, 53.40, 27.99, 34.1, 59.29),
    },
    # Table 2 labels this block 760M; its architecture is Table 5's "780M" row.
    ("760M params / 30B tokens", "760m", "780m", 760e6): {
        "transformer": (25.21, 27.64, 35.78, 66.92, 42.19, 51.95, 60.38, 32.46, 39.51, 60.37),
        "retnet": (26.08, 24.45, 34.51, 67.19, 41.63, 52.09, 63.17, 32.78, 38.36, 57.92),
        "mamba2": (22.94, 28.37, 33.54, 67.90, 42.71, 49.77, 63.48, 31.09, 40.06, 58.15),
        "deltanet": (24.37, 24.60, 37.06, 66.93, 41.98, 50.65, 64.87, 31.39, 39.88, 59.02),
        "ttt": (24.17, 23.51, 34.74, 67.25, 43.92, 50.99, 64.53, 33.81, 40.16, 59.58),
        "gated_deltanet": (21.18, 22.09, 35.54, 68.01, 44.95, 50.73, 66.87, 33.09, 39.21, 59.14),
        "samba": (20.63, 22.71, 39.72, 69.19, 47.35, 52.01, 66.92, 33.20, 38.98, 61.24),
        "gated_deltanet_h2": (19.88, 20.83, 39.18, 68.95, 48.22, 52.57, 67.01, 35.49, 39.39, 61.11),
        "moneta": (21.18, 21.94, 38.02, 69.55, 49.16, 53.01, 67.47, 36.09, 40.53, 63.18),
        "yaad": (20.99, 21.57, 37.85, 69.14, 50.02, 53.93, 67.78, 36.27, 41.01, 63.34),
        "memora": (22.28, 22.31, 38.19, 67.82, 49.30, 53.28, 63.57, 36.15, 40.94, 62.96),
        "moneta_h": (18.72, 20.13, 40.59, 70.84, 50.13, 54.17, 67.64, 36.79, 40.87, 62.43),
        "yaad_h": (18.59, 19.80, 40.22, 69.51, 50.48, 53.69, 68.04, 36.55, 40.28, 61.94),
        "memora_h": (18.24, 20.55, 39.91, 69.06, 49.84, 52.88, 66.90, 36.12, 40.99, 61.75),
    },
    ("1.3B params / 100B tokens", "1.3b", "1.3b", 1.3e9): {
        "transformer": (18.53, 18.32, 42.60, 70.02, 50.23, 53.51, 68.83, 35.10, 40.66, 57.09),
        "retnet": (19.08, 17.27, 40.52, 70.07, 49.16, 54.14, 67.34, 33.78, 40.78, 60.39),
        "mamba2": (16.56, 12.56, 45.66, 71.87, 55.67, 55.24, 72.47, 37.88, 40.20, 60.13),
        "deltanet": (17.71, 16.88, 42.46, 70.72, 50.93, 53.35, 68.47, 35.66, 40.22, 55.29),
        "gated_deltanet": (16.42, 12.17, 46.65, 72.25, 55.76, 57.45, 71.21, 38.39, 40.63, 60.24),
        "samba": (16.13, 13.29, 44.94, 70.94, 53.42, 55.56, 68.81, 36.17, 39.96, 62.11),
        "gated_deltanet_h2": (15.91, 12.55, 48.76, 72.19, 56.88, 57.77, 71.33, 39.07, 41.91, 61.55),
        "moneta": (15.52, 11.47, 47.88, 73.16, 56.14, 59.09, 72.53, 40.32, 41.91, 61.18),
        "yaad": (15.18, 11.89, 47.23, 72.81, 56.46, 59.02, 72.14, 40.05, 40.73, 61.86),
        "memora": (15.90, 12.04, 48.67, 73.10, 55.99, 57.36, 71.55, 37.92, 40.19, 61.34),
    },
}

BASELINES = ("transformer", "retnet", "gla", "mamba", "mamba2", "deltanet", "ttt", "gated_deltanet", "samba",
             "gated_deltanet_h2")  # fmt: skip
MIRAS = ("moneta", "yaad", "memora")
WIKI, AVG, VAL = "eval/wikitext/word_perplexity", "eval/avg/acc", "val/ppl"


def _rows(name: str, mixers) -> tuple[str, ...]:
    group = next(rows for (_, key, _, _), rows in PAPER.items() if key == name)
    return tuple(f"{m}-{name}" for m in mixers if m in group)


CLAIMS = (
    Claim("at 340M Moneta has the lowest Wiki ppl of all models", "Table 2", WIKI, _rows("340m", ["moneta"]),
          _rows("340m", [*BASELINES, "yaad", "memora"]), proxy=VAL),
    Claim("at 340M Moneta and Yaad have lower Wiki ppl than Gated DeltaNet", "Table 2", WIKI,
          _rows("340m", ["moneta", "yaad"]), _rows("340m", ["gated_deltanet"]), proxy=VAL),
    Claim("at 340M every Miras model's average accuracy is above every baseline's", "Table 2, section 6.1", AVG,
          _rows("340m", MIRAS), _rows("340m", BASELINES)),
    Claim("at 760M Moneta-H has lower Wiki ppl than Moneta", "Table 2", WIKI,
          _rows("760m", ["moneta_h"]), _rows("760m", ["moneta"]), proxy=VAL),
    Claim("at 760M Yaad-H has lower Wiki ppl than Yaad", "Table 2", WIKI, _rows("760m", ["yaad_h"]),
          _rows("760m", ["yaad"]), proxy=VAL),
    Claim("at 760M Memora-H has lower Wiki ppl than Memora", "Table 2", WIKI, _rows("760m", ["memora_h"]),
          _rows("760m", ["memora"]), proxy=VAL),
    Claim("at 760M every Miras model's average accuracy, hybrids included, is above every baseline's",
          "Table 2, section 6.1", AVG, _rows("760m", [*MIRAS, "moneta_h", "yaad_h", "memora_h"]),
          _rows("760m", BASELINES)),
    Claim("at 1.3B Moneta, Yaad and Memora have lower Wiki ppl than every baseline, hybrids included", "Table 2",
          WIKI, _rows("1.3b", MIRAS), _rows("1.3b", BASELINES), proxy=VAL),
    Claim("at 1.3B Moneta's and Yaad's average accuracy is above every baseline's, hybrids included", "Table 2",
          AVG, _rows("1.3b", ["moneta", "yaad"]), _rows("1.3b", BASELINES)),
)  # fmt: skip
"""What Table 2 shows (section 6.1 says more: "all of our variants outperform all the baselines", which the
table does not bear out: at 760M the pure variants trail GDN-H2 and Samba on Wiki ppl, so that is not claimed).
Where Wiki ppl is only a pipeline check (the offline fixtures), our held-out perplexity stands in for it."""

SEEDED = {"340m": ("transformer", "gated_deltanet", *MIRAS), "760m": ("transformer", "gated_deltanet", *MIRAS)}
"""Rows trained with seeds 0, 1 and 2, so that the claims between them are checked beyond seed noise; every other
row has seed 0 and borrows its group's pooled seed spread (``reports.noise``)."""

RUNS = tuple(
    Run(f"{mixer}-{name}", LABELS[mixer], group, f"{mixer}-{size}", params=params,
        seeds=(0, 1, 2) if mixer in SEEDED.get(name, ()) else (0,))
    for (group, name, size, params), rows in PAPER.items()
    for mixer in rows
)  # fmt: skip

TABLE = Table(
    paper="miras",
    key="table2",
    title="Language modelling and common-sense reasoning (zero-shot)",
    source="Miras, arXiv 2504.13173 v1, Table 2",
    columns=COLUMNS,
    runs=RUNS,
    paper_numbers={
        (f"{mixer}-{name}", column.key): value
        for (_, name, _, _), rows in PAPER.items()
        for mixer, values in rows.items()
        for column, value in zip(COLUMNS[1:-1], values, strict=True)
    }
    | {
        (f"{mixer}-{name}", AVG): round(sum(values[2:]) / 8, 2)
        for (_, name, _, _), rows in PAPER.items()
        for mixer, values in rows.items()
    },
    claims=CLAIMS,
    references=tuple(f"gated_deltanet-{name}" for _, name, _, _ in PAPER),
    notes=(
        "Hybrid models are marked with *. The -H hybrids were not trained at 1.3B in the paper.",
        "Val ppl is our held-out perplexity on the training corpus; the paper has no such column.",
        "Avg acc is not in v1: the paper's value is the mean of its eight accuracies (as the ICLR version's Avg).",
    ),
)
