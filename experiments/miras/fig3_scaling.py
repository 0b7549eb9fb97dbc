"""Miras Figure 3 (arXiv 2504.13173 v1): scaling patterns on C4, over model size and over training context.

The figure has three panels (Miras, arXiv 2504.13173 v1, Figure 3): perplexity against FLOPs while the model
size varies (left), and perplexity against training context 2K to 32K at 340M (middle) and 760M (right). Its
values are not recoverable from the text, so there are no paper numbers: the text claims that Moneta, Yaad and
Memora scale better with context than the baselines, naming Mamba2 and GSA, and beat every baseline at roughly
equal FLOPs.

The size panel trains every model at 170M, 340M and 760M on the presets' token budgets at the 4K context; the
context panels add 2K, 8K, 16K and 32K at 340M and 760M (their 4K point is the size panel's run). FLOPs are not
logged; the report's plot estimates them as 6 x parameters x tokens. Every run reads C4 (``en``) at paper
scale; tiny and smoke read the offline corpus, and the scale rules shrink contexts in proportion, so the
sweep stays a sweep at every scale.

At tiny (and smoke) the grid is thinned to what a CPU trains in hours (``Run.only_at``): the whole size panel, and
the context panel at 340M alone with 2K and 16K beside the 4K point (tiny contexts 128, 256 and 1024). A tiny run
whose config is a Table 2 run's (the 340M and 760M presets at 4K: C4 becomes the offline corpus at tiny) is that
run, trained once (``python -m miras train --skip-done`` skips it, the report reads its summaries). Rows are
grouped by model size, so a single-seed row takes the seed spread of the seeded Table 2 rows of its size.
"Scale better with context" is checked as a slope: the relative drop in perplexity from the shortest to the
longest context of the panel (``Drop``), each Miras model's against each baseline's.
"""

from miras.experiment import Claim, Column, Drop, Run, Table

MODELS = {
    "moneta": "Moneta",
    "yaad": "Yaad",
    "memora": "Memora",
    "transformer": "Transformer++",
    "mamba2": "Mamba2",
    "gated_deltanet": "Gated DeltaNet",
}
MIRAS = ("moneta", "yaad", "memora")
SIZES = {"170m": "120M", "340m": "340M", "780m": "760M"}
"""Preset size -> the size the paper's text names."""
BASE_CONTEXT = 4096
CONTEXTS = {"340m": (2048, 8192, 16384, 32768), "780m": (2048, 8192, 16384, 32768)}
"""The context panels: size -> contexts beside the 4K point."""
THIN = {"340m": (2048, 16384)}
"""The context panels of the thinned grid (tiny and smoke)."""
THINNED = ("tiny", "smoke")
C4 = ("data.dataset=c4", "data.name=en")


def _name(model: str, size: str, context: int) -> str:
    return f"{model}-{SIZES[size].lower()}-ctx{context // 1024}k"


def _run(model: str, size: str, context: int, only_at: tuple[str, ...] | None = None) -> Run:
    return Run(
        _name(model, size, context),
        f"{MODELS[model]} {SIZES[size]}, {context // 1024}K",
        SIZES[size],
        f"{model}-{size}",
        (*C4, f"data.seq_len={context}"),
        only_at=only_at,
    )


def _everywhere(size: str, context: int) -> tuple[str, ...] | None:
    """Where a context-panel run is trained: every scale if the thinned grid keeps it, else the full grids."""
    return None if context in THIN.get(size, ()) else ("paper", "small")


RUNS = tuple(
    run
    for size in SIZES
    for model in MODELS
    for run in (
        _run(model, size, c, None if c == BASE_CONTEXT else _everywhere(size, c))
        for c in sorted((BASE_CONTEXT, *CONTEXTS.get(size, ())))
    )
)


def _context_claim(size: str, first: int, last: int, only_at: tuple[str, ...]) -> Claim:
    def drop(model: str) -> Drop:
        return Drop(f"{model}-{SIZES[size].lower()}-drop", f"{MODELS[model]} {SIZES[size]}, {first // 1024}K to "
                    f"{last // 1024}K", _name(model, size, first), _name(model, size, last))  # fmt: skip

    drops = tuple(drop(m) for m in MODELS)
    return Claim(
        f"at {SIZES[size]}, the perplexity of Moneta, Yaad and Memora each falls more from the {first // 1024}K to "
        f"the {last // 1024}K context than every baseline's",
        "Figure 3 (middle, right), section 6",
        "val/ppl",
        tuple(d.name for d, m in zip(drops, MODELS, strict=True) if m in MIRAS),
        tuple(d.name for d, m in zip(drops, MODELS, strict=True) if m not in MIRAS),
        from_text=True,
        drops=drops,
        only_at=only_at,
    )


CLAIMS = tuple(
    Claim(f"at {SIZES[s]} (4K context) Moneta, Yaad and Memora each have lower perplexity than every baseline",
          "Figure 3 (left), section 6", "val/ppl",
          tuple(_name(m, s, BASE_CONTEXT) for m in MIRAS),
          tuple(_name(m, s, BASE_CONTEXT) for m in MODELS if m not in MIRAS), from_text=True)
    for s in SIZES
) + tuple(
    _context_claim(size, min(contexts), max(contexts), ("paper", "small")) for size, contexts in CONTEXTS.items()
) + tuple(_context_claim(size, min(contexts), max(contexts), THINNED) for size, contexts in THIN.items())  # fmt: skip
"""The size panel's claim per size, and "scale better with context" as a slope per context panel: the relative
drop in perplexity from its shortest to its longest context."""

TABLE = Table(
    paper="miras",
    key="fig3_scaling",
    title="Scaling patterns on C4: model size (FLOPs) and training context length",
    source="Miras, arXiv 2504.13173 v1, Figure 3 (no recoverable values)",
    columns=(Column("val/ppl", "Val ppl", higher_is_better=False),),
    runs=RUNS,
    claims=CLAIMS,
    notes=(
        "The paper's plotted values are not recoverable; only its qualitative claims can be compared.",
        "The baselines of the figure are not recoverable beyond Mamba2 and GSA; GSA has no preset here, so "
        "Transformer++, Mamba2 and Gated DeltaNet stand in.",
        "The model sizes, token budgets and (for the context panels) the tokens per run are not stated; we use "
        "the 170M (the text's 120M), 340M and 760M presets with their Table 2 budgets, at every context.",
        "FLOPs in the plot are 6 x parameters x tokens, which ignores the attention and memory-update terms.",
        "Each context panel's 4K point is the size panel's run at that size; at tiny and smoke the context panel "
        "is 340M at 2K, 4K and 16K.",
        "A drop is 1 - (val ppl at the longest context) / (val ppl at the shortest); its noise is the two runs' seed "
        "noise by the delta method.",
    ),
)
