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
"""

from miras.experiment import Claim, Column, Run, Table

MODELS = {
    "moneta": "Moneta",
    "yaad": "Yaad",
    "memora": "Memora",
    "transformer": "Transformer++",
    "mamba2": "Mamba2",
    "gated_deltanet": "Gated DeltaNet",
}
SIZES = {"170m": "120M", "340m": "340M", "780m": "760M"}
"""Preset size -> the size the paper's text names."""
CONTEXT_SIZES = ("340m", "780m")
BASE_CONTEXT = 4096
CONTEXTS = (2048, 8192, 16384, 32768)
C4 = ("data.dataset=c4", "data.name=en")

SIZE_GROUP = "Model size (4K context)"


def _run(model: str, size: str, context: int, group: str) -> Run:
    return Run(
        f"{model}-{SIZES[size].lower()}-ctx{context // 1024}k",
        f"{MODELS[model]} {SIZES[size]}, {context // 1024}K",
        group,
        f"{model}-{size}",
        (*C4, f"data.seq_len={context}"),
    )


RUNS = tuple(_run(m, s, BASE_CONTEXT, SIZE_GROUP) for s in SIZES for m in MODELS) + tuple(
    _run(m, s, c, f"Training context ({SIZES[s]})") for s in CONTEXT_SIZES for m in MODELS for c in CONTEXTS
)

MIRAS = ("moneta", "yaad", "memora")
CLAIMS = tuple(
    Claim(f"at {SIZES[s]} (4K context) Moneta, Yaad and Memora each have lower perplexity than every baseline",
          "Figure 3 (left), section 6", "val/ppl",
          tuple(_run(m, s, BASE_CONTEXT, SIZE_GROUP).name for m in MIRAS),
          tuple(_run(m, s, BASE_CONTEXT, SIZE_GROUP).name for m in MODELS if m not in MIRAS), from_text=True)
    for s in SIZES
)  # fmt: skip
"""The size panel's claim, per size; "scale better with context" is a statement about slopes, which a pairwise
claim cannot state, so the context panels carry none."""

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
        "Each context panel's 4K point is the size panel's run at that size.",
    ),
)
