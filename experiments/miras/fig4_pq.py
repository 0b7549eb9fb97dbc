"""Miras Figure 4 (arXiv 2504.13173 v1): the effect of p and q on (p, q)-Moneta across context lengths.

The figure's values, model size and data are not recoverable from the paper, so there are no paper numbers:
the text says p = 3 is best and p = 4 worst with "almost the same" scaling over context, while q changes the
scaling pattern. p is swept at q = 4 and q at p = 3, each at training contexts 2K, 4K, 8K and 16K, on the 340M
preset (the scale rules shrink contexts in proportion, so the sweep stays a sweep at every scale).

At tiny (and smoke) the sweep is thinned to what a CPU trains in a few hours (``Run.only_at``): p in {1, 2, 3, 4}
and q in {2, 3, 4, 5} at 2K and 4K (tiny contexts 128 and 256). Its p = 3, q = 4 runs are Table 2's Moneta 340M (4K)
and Figure 3's Moneta 340M at 2K, trained once.
"""

from miras.experiment import Claim, Column, Run, Table

P_VALUES = (1.0, 1.5, 2.0, 2.8, 3.0, 3.2, 4.0)
Q_VALUES = (2.0, 3.0, 4.0, 5.0)
CONTEXTS = (2048, 4096, 8192, 16384)
THIN = {"p": (1.0, 2.0, 3.0, 4.0), "q": Q_VALUES, "context": (2048, 4096)}
"""The thinned sweep of tiny and smoke."""
THINNED = ("tiny", "smoke")
FULL = ("paper", "small")


def _thinned(p: float, q: float, context: int) -> bool:
    return p in THIN["p"] and q in THIN["q"] and context in THIN["context"]


def _run(p: float, q: float, context: int, group: str) -> Run:
    return Run(
        f"moneta-p{p:g}-q{q:g}-ctx{context // 1024}k",
        f"p={p:g}, q={q:g}, {context // 1024}K",
        group,
        "moneta-340m",
        (f"model.mixer.memory.p={p}", f"model.mixer.memory.q={q}", f"data.seq_len={context}"),
        only_at=None if _thinned(p, q, context) else FULL,
    )


RUNS = tuple(_run(p, 4.0, c, "p sweep (q = 4)") for p in P_VALUES for c in CONTEXTS) + tuple(
    _run(3.0, q, c, "q sweep (p = 3)") for q in Q_VALUES if q != 4.0 for c in CONTEXTS
)


def _p_runs(context: int, keep, values=P_VALUES) -> tuple[str, ...]:
    return tuple(_run(p, 4.0, context, "").name for p in values if keep(p))


def _claims(contexts, values, only_at) -> tuple[Claim, ...]:
    return tuple(
        claim
        for c in contexts
        for claim in (
            Claim(f"at {c // 1024}K, p = 3 has the lowest perplexity of the p sweep", "Figure 4, section 6",
                  "val/ppl", _p_runs(c, lambda p: p == 3.0, values), _p_runs(c, lambda p: p != 3.0, values),
                  from_text=True, only_at=only_at),
            Claim(f"at {c // 1024}K, p = 4 has the highest perplexity of the p sweep", "Figure 4, section 6",
                  "val/ppl", _p_runs(c, lambda p: p != 4.0, values), _p_runs(c, lambda p: p == 4.0, values),
                  from_text=True, only_at=only_at),
        )
    )  # fmt: skip


CLAIMS = _claims(CONTEXTS, P_VALUES, FULL) + _claims(THIN["context"], THIN["p"], THINNED)

TABLE = Table(
    paper="miras",
    key="fig4_pq",
    title="Effect of p and q on Moneta across training context lengths",
    source="Miras, arXiv 2504.13173 v1, Figure 4 (no recoverable values)",
    columns=(Column("val/ppl", "Val ppl", higher_is_better=False),),
    runs=RUNS,
    claims=CLAIMS,
    notes=(
        "The paper's plotted values are not recoverable; only its qualitative claims can be compared.",
        "The q sweep at q = 4 is the p sweep's p = 3 row.",
        "At tiny and smoke the sweep is thinned to p in {1, 2, 3, 4} and q in {2, 3, 4, 5} at 2K and 4K.",
    ),
)
