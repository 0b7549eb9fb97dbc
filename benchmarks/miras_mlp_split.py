"""``python -m benchmarks.miras_mlp_split``: how much of the MLP memory's chunk kernels must stay serial.

Counts, per chunk of ``b`` tokens, the multiply-adds of every product that ``kernels/miras/chunk_mlp.py`` forms
(``decay.dot`` and the decay-weighted ``scores``, ``mix``, ``mix_t`` of ``decay.py``) plus the weight-sized
multiply-adds of the carried state (its decay, Memora's simplex VJPs and gradient sums, lq's ``||W||_q^q``), and
sorts them into three classes:

- ``a``: independent of the weights: ``A_1 = scores(q c_1, eta k, g)`` (``c_1`` is 1 unless lq), the gate cumsums
  and decays (elementwise, not counted);
- ``b``: the chunk-start weights and per-token tensors a serial pass can store (``g_1, eta g_2``, ``H_1``): the dual
  reads at the queries (``z_1, h``, the layer-2 read, ``o``) and, in the backward, every term that does not feed
  the carried ``dW``; ``b_dW`` of them read the chunk-end ``dW`` (``dk, deta, dlog alpha`` from ``dU``), which a
  serial backward pass can store as ``chunk_linear``'s ``bwd_state`` stores ``dS'``;
- ``c``: the serial recurrence: the memory at the keys, its hand backprop ``g_1, g_2`` (``_keys``, ``_chain``),
  the end state ``W'`` and, in the backward, what feeds the carried ``dW`` chain.

``forward`` counts the one-program forward the split replaced (``_mlp_fwd_kernel``, removed; kept to compare),
``forward (split)`` the state pass and per-chunk read that run today; ``backward`` the one-program backward the
split replaced (``_mlp_bwd_kernel`` walking whole sequences, kept to compare), ``backward (split)`` the two parts
of ``_mlp_bwd_kernel`` that run today: ``READ`` per chunk (every product ``a`` or ``b``) and ``CARRY`` per
sequence (every product ``c``).
``repeat`` marks a product formed again within the same chunk (each tile pass recomputes its ``[b, BET]``
intermediates; ``kernels/miras/README.md``): storing ``[b, E]`` tensors per chunk would remove it.
Activations, LayerNorms, exponentials and the other ``[b, D]`` elementwise work are left out. Pure arithmetic;
writes ``reports/benchmarks/miras_mlp_split.{md,json}``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from kernels.miras import PRESETS
from kernels.miras.common import KL_TANGENT, chunk_retention
from kernels.miras.decay import BC
from kernels.utils import git_tag, write_record

REPO = Path(__file__).resolve().parents[1]
SHAPE = (4, 4096, 16)
"""``(B, T, H)`` of the issue (fla's benchmark batch)."""
CHUNK = 64
DIMS = (64, 128)
MEMORIES = {
    "moneta": PRESETS["moneta"],
    "yaad": PRESETS["yaad"],
    "memora": PRESETS["memora"].replace(kl_read="tangent"),
}
"""The model presets' memories (``miras.presets.MEMORIES``): Memora reads through the tangent step."""


def decay_product(b: int, F: int) -> int:
    """Multiply-adds of ``scores``, ``mix`` or ``mix_t`` over ``b`` rows and ``F`` features (``decay.py``): the
    off-diagonal half-block product at every split and ``BC^2 F`` inside each ``BC``-row block."""
    bc = BC.value
    return bc * bc * F if b <= bc else (b // 2) ** 2 * F + 2 * decay_product(b // 2, F)


@dataclass(frozen=True)
class Op:
    """One product of a chunk: where (kernel function), what, its class, ``bDE, bbE, dec, DE`` counts (products
    of ``[b, D] x [D, E]``-like, ``[b, b] x [b, E]``-like sizes, decay products over ``D`` features, weight-sized
    elementwise multiply-adds), the retentions it runs for and whether it repeats an earlier product."""

    where: str
    what: str
    cls: str
    bDE: int = 0
    bbE: int = 0
    dec: int = 0
    DE: int = 0
    when: str = "all"
    repeat: bool = False

    def macs(self, b: int, D: int, E: int) -> int:
        return self.bDE * b * D * E + self.bbE * b * b * E + self.dec * decay_product(b, D) + self.DE * D * E


_LAG = "kl"  # Memora: the lag token's exact step and its read
_TAN, _LIN = "tangent", "linear"  # Memora's tangent read, or every other read (with lq's scales)

LAG_STEP = (
    Op("_lag_step/_keys", "lag row at the keys: Z_1 = k W_1, H_1 W_2", "c", bDE=2, when=_LAG),
    Op("_lag_step", "Z_1 again", "c", bDE=1, when=_LAG, repeat=True),
    Op("_lag_step", "G = g_2 W_2^T, (eta k)^T g_1, H_1^T (eta g_2)", "c", bDE=3, when=_LAG),
    Op("_lag_step", "a_0 log W - step, both weights", "c", DE=2, when=_LAG),
)
"""Memora's lag token (``_lag_step``), in both directions; its products have one nonzero row."""
START = (
    Op("_scales", "lq: ||W_1||_q^q, ||W_2||_q^q", "c", DE=2, when="lq"),
    Op("_keys", "Z_1 = (k c_1) W_1, Y = (H_1 c_2) W_2", "c", bDE=2),
    Op("_chunk_start", "A_1 = scores(q c_1, eta k, g)", "a", dec=1),
)
"""``_chunk_start``, in both directions."""

FORWARD = (
    *LAG_STEP,
    *START,
    Op("_chain", "Z_1 again", "c", bDE=1, repeat=True),
    Op("_chain", "G = g_2 W_2^T", "c", bDE=1),
    Op("_chain", "z_1 retained part: (q c_1 e^g) W_1", "b", bDE=1, when=_LIN),
    Op("_chain/_tangent_rows", "z_1 retained part: read W_1, (read fade) WL_1, fade WL_1", "b", bDE=3, when=_TAN),
    Op("_chain", "z_1 -= A_1 g_1", "b", bbE=1),
    Op("_mlp_fwd_kernel", "S_2 = (h c_2) H_1^T", "b", bbE=1),
    Op("_mlp_fwd_kernel", "M_2 = (h c_2) W_2", "b", bDE=1),
    Op("_tangent_sums", "N_2 = read_2 (W_2 log W_2)", "b", bDE=1, when=_TAN),
    Op("_mlp_fwd_kernel", "lag row's read act(q_0 W_1) W_2 from the lag weights", "b", bDE=2, when=_LAG),
    Op("_mlp_fwd_kernel", "U_1 = (eta k e^{g_last - g})^T g_1, U_2 = H_1^T (eta g_2 e^{g_last - g})", "c", bDE=2),
    Op("_mlp_fwd_kernel", "W' = e^{g_last} W - U (or its log-space carry), both weights", "c", DE=2),
    Op("_mlp_fwd_kernel", "z_2 -= mix(S_2, eta g_2, g)", "b", dec=1),
)
"""The one-program forward per chunk (``_mlp_fwd_kernel``, which the split forward replaced), for comparison."""
SPLIT_FORWARD = (
    *LAG_STEP,
    *START[:2],
    Op("_mlp_fwd_state_kernel", "Z_1 again", "c", bDE=1, repeat=True),
    Op("_mlp_fwd_state_kernel", "G = g_2 W_2^T, U_1, U_2", "c", bDE=3),
    Op("_mlp_fwd_state_kernel", "W' = e^{g_last} W - U (or its log-space carry), both weights", "c", DE=2),
    Op("_mlp_fwd_output_kernel/_scales", "lq: ||W_1||_q^q, ||W_2||_q^q again", "b", DE=2, when="lq"),
    Op("_mlp_fwd_output_kernel", "A_1 = scores(q c_1, eta k, g)", "a", dec=1),
    Op("_mlp_fwd_output_kernel", "H_1 = act((k c_1) W_1) again", "b", bDE=1, repeat=True),
    Op("_mlp_fwd_output_kernel", "z_1 retained part: (q c_1 e^g) W_1", "b", bDE=1, when=_LIN),
    Op("_mlp_fwd_output_kernel", "z_1 retained part: read W_1, (read fade) WL_1, fade WL_1", "b", bDE=3, when=_TAN),
    Op("_mlp_fwd_output_kernel", "z_1 -= A_1 g_1, S_2, M_2", "b", bDE=1, bbE=2),
    Op("_mlp_fwd_output_kernel/_tangent_sums", "N_2 = read_2 (W_2 log W_2)", "b", bDE=1, when=_TAN),
    Op("_mlp_fwd_output_kernel", "z_2 -= mix(S_2, eta g_2, g)", "b", dec=1),
)
"""The split forward: ``_mlp_fwd_state_kernel`` (serial: Memora's lag step, then the memory at the keys, with ``G``
formed with ``Z_1`` in one tile pass, and the end state) and ``_mlp_fwd_output_kernel`` (per chunk; it forms
``H_1`` again from the chunk-start weights, Memora's from the stored lag weights, whose lag row is an ordinary row
of the read)."""


def _tile_back(name: str, first: bool) -> tuple[Op, ...]:
    """What every backward pass forms again per tile (``_tile_back``: ``_chain``, ``_end_grads``, ``_read2_grad``);
    ``first``: pass 1, where the end gradients and the layer-2 read's gradient are new."""
    return (
        Op(f"{name}/_chain", "Z_1, G again", "c", bDE=2, repeat=True),
        Op(f"{name}/_chain", "z_1 again (linear read)", "b", bDE=1, when=_LIN, repeat=True),
        Op(f"{name}/_chain", "z_1 again (tangent read)", "b", bDE=3, when=_TAN, repeat=True),
        Op(f"{name}/_chain", "A_1 g_1 again", "b", bbE=1, repeat=True),
        Op(f"{name}/_end_grads", "Memora: dU through the end simplex", "c", DE=2, when=_LAG, repeat=not first),
        Op(f"{name}/_read2_grad", "d(h c_2) = dM_2 W_2^T + dS_2 H_1", "b", bDE=1, bbE=1, repeat=not first),
        Op(f"{name}/_read2_grad", "+ dN_2 (W_2 log W_2)^T", "b", bDE=1, when=_TAN, repeat=not first),
    )


BACKWARD = (
    *LAG_STEP,
    *START,
    Op("recompute", "Z_1 again", "c", bDE=1, repeat=True),
    Op("recompute", "G = g_2 W_2^T", "c", bDE=1),
    Op("recompute", "z_1 retained part (linear read)", "b", bDE=1, when=_LIN),
    Op("recompute", "z_1 retained part (tangent read)", "b", bDE=3, when=_TAN),
    Op("recompute", "A_1 g_1, S_2, M_2", "b", bDE=1, bbE=2),
    Op("recompute", "N_2", "b", bDE=1, when=_TAN),
    Op("recompute", "lag row's read", "b", bDE=2, when=_LAG),
    Op("recompute", "Memora: sum_e W_2' dW_2'", "c", DE=1, when=_LAG),
    Op("_mlp_bwd_kernel", "mix(S_2, eta g_2), scores(dz_2, eta g_2), mix_t(S_2, dz_2)", "b", dec=3),
    *_tile_back("pass 1", first=True),
    Op("pass 1", "dread_1 = dz_1 W_1^T (linear read)", "b", bDE=1, when=_LIN),
    Op("pass 1/_tangent_rows_vjp", "dread_1, dfade (tangent read)", "b", bDE=5, when=_TAN),
    Op("pass 1", "dA_1 = -dz_1 g_1^T", "b", bbE=1),
    Op("pass 1", "d(eta k e^{g_last-g}) = -g_1 dU_1^T, d(eta g_2 ...) = -H_1 dU_2", "b_dW", bDE=2),
    Op("pass 1", "dg_last: sum W dU over both weights", "b_dW", DE=2),
    Op("_mlp_bwd_kernel", "mix(dA_1, eta k), mix_t(dA_1, q c_1)", "b", dec=2),
    *_tile_back("pass 2", first=False),
    Op("pass 2/_g1_grad", "-A_1^T dz_1", "b", bbE=1),
    Op("pass 2/_g1_grad", "-(eta k e^{g_last-g}) dU_1", "c", bDE=1),
    Op("pass 2", "dg_2 += (dg_1 c_2 act'(Z_1)) W_2", "c", bDE=1),
    *_tile_back("pass 3", first=False),
    Op("pass 3/_g1_grad", "-A_1^T dz_1 again", "b", bbE=1, repeat=True),
    Op("pass 3/_g1_grad", "-(eta k e^{g_last-g}) dU_1 again", "c", bDE=1, repeat=True),
    Op("pass 3", "dH_1 = dS_2^T read_2", "b", bbE=1),
    Op("pass 3", "dH_1 -= (eta g_2 e^{g_last-g}) dU_2^T, dZ_2 W_2^T", "c", bDE=2),
    Op("pass 3", "dk += dZ_1 W_1^T", "b_dW", bDE=1),
    Op("pass 3", "dW = e^{g_last} dU (Memora: / W), both weights", "c", DE=2),
    Op("pass 3", "dW_1 += (q c_1 e^g)^T dz_1 (linear read)", "b", bDE=1, when=_LIN),
    Op("pass 3/_tangent_rows_dw", "dW_1 of the tangent read", "b", bDE=5, DE=1, when=_TAN),
    Op("pass 3", "dW_2 += (read_2^T dN_2) (log W_2 + 1)", "b", bDE=1, DE=1, when=_TAN),
    Op("pass 3", "dW_1 += (k c_1)^T dZ_1", "c", bDE=1),
    Op("pass 3", "dW_2 += read_2^T dM_2", "b", bDE=1),
    Op("pass 3", "dW_2 += dG^T g_2 + (H_1 c_2)^T dZ_2", "c", bDE=2),
    Op("pass 3", "lag row's read backward (q_0 W_1 again, dzq_1, dW, dq)", "b", bDE=5, when=_LAG),
    Op("pass 3", "Memora: sum_e W_2 dW_2", "c", DE=1, when=_LAG),
    Op("lq pass", "lq: dc . dc/dW, both weights", "c", DE=2, when="lq"),
    Op("lag loop 1", "Z_1, G at the chunk start; -act(Z_1) dL_2", "c", bDE=3, when=_LAG),
    Op("lag loop 1", "dk_0: -g_1 dL_1^T", "b_dW", bDE=1, when=_LAG),
    Op("lag loop 1", "simplex VJPs, dlog alpha_0", "c", DE=4, when=_LAG),
    Op("lag loop 2", "-(eta k)_0 dL_1, (dg_1 act'(Z_1)) St_2", "c", bDE=2, when=_LAG),
    Op("lag loop 2", "Z_1 again, simplex VJPs again", "c", bDE=1, DE=2, when=_LAG, repeat=True),
    Op("lag loop 3", "Z_1, G, dg_1 again, simplex VJPs again", "c", bDE=3, DE=2, when=_LAG, repeat=True),
    Op("lag loop 3", "dH_1 (2 products), dSt_1, dSt_2 (2 products), exact-step dW", "c", bDE=5, DE=2, when=_LAG),
    Op("lag loop 3", "dk_0: dZ_1 St_1^T", "b_dW", bDE=1, when=_LAG),
)
"""``_mlp_bwd_kernel`` per chunk: the lag step and the chunk's forward again, then passes 1-3 over the tiles
(lq: a fourth for the scales; Memora: three more for the lag step's VJP)."""


SPLIT_BACKWARD = (
    Op("READ/_scales", "lq: ||W_1||_q^q, ||W_2||_q^q", "b", DE=2, when="lq"),
    Op("READ/_keys", "Z_1 = (k c_1) W_1, Y = (H_1 c_2) W_2", "b", bDE=2),
    Op("READ/_chunk_start", "A_1 = scores(q c_1, eta k, g)", "a", dec=1),
    Op("READ/_chain", "Z_1, G again", "b", bDE=2, repeat=True),
    Op("READ/_chain", "z_1 retained part (linear read)", "b", bDE=1, when=_LIN),
    Op("READ/_chain", "z_1 retained part (tangent read)", "b", bDE=3, when=_TAN),
    Op("READ", "A_1 g_1, S_2, M_2", "b", bDE=1, bbE=2),
    Op("READ/_tangent_sums", "N_2", "b", bDE=1, when=_TAN),
    Op("READ", "lag row's read from the stored lag weights", "b", bDE=2, when=_LAG),
    Op("READ", "mix(S_2, eta g_2), scores(dz_2, eta g_2), mix_t(S_2, dz_2)", "b", dec=3),
    *(
        Op(f"READ {name}/_chain", what, "b", **counts, repeat=True)
        for name in ("pass 1", "pass 2")
        for what, counts in (
            ("Z_1, G again", dict(bDE=2)),
            ("z_1 again (linear read)", dict(bDE=1, when=_LIN)),
            ("z_1 again (tangent read)", dict(bDE=3, when=_TAN)),
            ("A_1 g_1 again", dict(bbE=1)),
        )
    ),
    Op("READ pass 1/_read2_grad", "d(h c_2) = dM_2 W_2^T + dS_2 H_1", "b", bDE=1, bbE=1),
    Op("READ pass 1/_read2_grad", "+ dN_2 (W_2 log W_2)^T", "b", bDE=1, when=_TAN),
    Op("READ pass 1", "dread_1 = dz_1 W_1^T (linear read)", "b", bDE=1, when=_LIN),
    Op("READ pass 1/_tangent_rows_vjp", "dread_1, dfade (tangent read)", "b", bDE=5, when=_TAN),
    Op("READ pass 1", "dA_1 = -dz_1 g_1^T", "b", bbE=1),
    Op("READ", "mix(dA_1, eta k), mix_t(dA_1, q c_1)", "b", dec=2),
    Op("READ pass 1/_g1_grad", "-A_1^T dz_1", "b", bbE=1),
    Op("READ pass 1", "dg_2 += (dg_1 c_2 act'(Z_1)) W_2", "b", bDE=1),
    Op("READ pass 2/_read2_grad", "d(h c_2) again", "b", bDE=1, bbE=1, repeat=True),
    Op("READ pass 2/_read2_grad", "+ dN_2 (W_2 log W_2)^T again", "b", bDE=1, when=_TAN, repeat=True),
    Op("READ pass 2/_g1_grad", "-A_1^T dz_1 again", "b", bbE=1, repeat=True),
    Op("READ pass 2", "dH_1 = dS_2^T read_2, dZ_2 W_2^T, dk += dZ_1 W_1^T", "b", bDE=2, bbE=1),
    Op("READ pass 2", "dW_1 += (q c_1 e^g)^T dz_1 (linear read)", "b", bDE=1, when=_LIN),
    Op("READ pass 2/_tangent_rows_dw", "dW_1 of the tangent read", "b", bDE=5, DE=1, when=_TAN),
    Op("READ pass 2", "dW_2 += (read_2^T dN_2) (log W_2 + 1)", "b", bDE=1, DE=1, when=_TAN),
    Op("READ pass 2", "dW_1 += (k c_1)^T dZ_1, dW_2 += read_2^T dM_2 + dG^T g_2 + (H_1 c_2)^T dZ_2", "b", bDE=4),
    Op("READ pass 2", "lag row's read backward (q_0 W_1 again, dzq_1, dW, dq)", "b", bDE=5, when=_LAG),
    Op("READ lq pass", "lq: dc . dc/dW, both weights", "b", DE=2, when="lq"),
    Op("CARRY/_lag_keys", "lag row at the keys: Z_1 = k W_1, H_1 W_2 (the lag weights: stored)", "c", bDE=2, when=_LAG),
    Op("CARRY/_scales", "lq: ||W_1||_q^q, ||W_2||_q^q", "c", DE=2, when="lq"),
    Op("CARRY/_keys", "Z_1 = (k c_1) W_1, Y = (H_1 c_2) W_2", "c", bDE=2, repeat=True),
    Op("CARRY", "Memora: sum_e W_2' dW_2'", "c", DE=1, when=_LAG),
    *(
        Op(f"CARRY {name}/{where}", what, "c", **counts, repeat=repeat)
        for name in ("pass 1", "pass 2")
        for where, what, counts, repeat in (
            ("_chain", "Z_1, G again", dict(bDE=2), True),
            ("_end_grads", "Memora: dU through the end simplex", dict(DE=2, when=_LAG), name != "pass 1"),
        )
    ),
    Op("CARRY pass 1", "-g_1 dU_1^T, -H_1 dU_2", "c", bDE=2),
    Op("CARRY pass 1", "dg_last: sum W dU over both weights", "c", DE=2),
    Op("CARRY pass 1/_g1_grad", "-(eta k e^{g_last-g}) dU_1", "c", bDE=1),
    Op("CARRY pass 1", "dg_2 += (dg_1 c_2 act'(Z_1)) W_2", "c", bDE=1),
    Op("CARRY pass 2/_g1_grad", "-(eta k e^{g_last-g}) dU_1 again", "c", bDE=1, repeat=True),
    Op("CARRY pass 2", "dH_1 = -(eta g_2 e^{g_last-g}) dU_2^T, dZ_2 W_2^T, dk += dZ_1 W_1^T", "c", bDE=3),
    Op("CARRY pass 2", "dW = e^{g_last} dU (Memora: / W) + the READ part's dW, both weights", "c", DE=4),
    Op("CARRY pass 2", "dW_1 += (k c_1)^T dZ_1, dW_2 += dG^T g_2 + (H_1 c_2)^T dZ_2", "c", bDE=3),
    Op("CARRY pass 2", "Memora: sum_e W_2 dW_2", "c", DE=1, when=_LAG),
    Op("CARRY lq pass", "lq: dc . dc/dW, both weights", "c", DE=2, when="lq"),
    *(Op(f"CARRY/{op.where}", op.what, "c", op.bDE, op.bbE, op.dec, op.DE, op.when, op.repeat) for op in BACKWARD
      if op.where.startswith("lag loop")),
)  # fmt: skip
"""The split backward per chunk: the ``READ`` part (chunk-parallel, so every product is class ``b`` or ``a``: the
chunk's reads taken back from its start weights, Memora's from the stored lag weights) and the ``CARRY`` part
(serial, class ``c``: the carried ``dW`` through the writes, Memora's lag step's VJP, from the lag weights the
forward stored). Both form the memory
at the keys and ``Z_1, G`` in each pass; the products linear in both parts' gradients (``dg_2``'s, ``dZ_1``'s,
``dk``'s and ``dW``'s key-side terms) run in each."""


def runs(op: Op, retention: int, lq: bool) -> bool:
    kl = retention >= 4
    return {
        "all": True,
        "lq": lq,
        _LAG: kl,
        _TAN: retention == KL_TANGENT.value,
        _LIN: retention != KL_TANGENT.value,
    }[op.when]


def split(ops, spec, b: int, D: int) -> dict[str, int]:
    """Multiply-adds per chunk of each class (``b_dW`` inside ``b``), and of the repeats inside ``c``."""
    E = spec.expansion * D
    retention, lq = chunk_retention(spec), spec.retention == "lq"
    out = dict.fromkeys(("a", "b", "b_dW", "c", "c_repeat", "b_repeat"), 0)
    for op in ops:
        if not runs(op, retention, lq):
            continue
        n = op.macs(b, D, E)
        cls = "b" if op.cls == "b_dW" else op.cls
        out[cls] += n
        if op.cls == "b_dW":
            out["b_dW"] += n
        if op.repeat and cls in ("b", "c"):
            out[f"{cls}_repeat"] += n
    return out


def rows(memories=MEMORIES, dims=DIMS, chunk=CHUNK, shape=SHAPE) -> list[dict]:
    B, T, H = shape
    chunks = B * H * -(-T // chunk)
    out = []
    for name, spec in memories.items():
        for D in dims:
            directions = [("forward", FORWARD), ("forward (split)", SPLIT_FORWARD), ("backward", BACKWARD)]
            directions.append(("backward (split)", SPLIT_BACKWARD))
            for direction, ops in directions:
                counts = split(ops, spec, chunk, D)
                total = counts["a"] + counts["b"] + counts["c"]
                out.append(
                    {
                        "memory": name,
                        "retention": spec.retention if spec.retention != "kl" else f"kl ({spec.kl_read} read)",
                        "D": D,
                        "E": spec.expansion * D,
                        "direction": direction,
                        **counts,
                        "total": total,
                        "serial_share": counts["c"] / total,
                        "serial_share_no_repeat": (counts["c"] - counts["c_repeat"])
                        / (total - counts["c_repeat"] - counts["b_repeat"]),
                        "gmac_per_call": total * chunks / 1e9,
                        "serial_gmac_per_program": counts["c"] * -(-T // chunk) / 1e9,
                    }
                )
    return out


def markdown(table: list[dict], git: str) -> str:
    B, T, H = SHAPE

    def m(x):
        return f"{x / 1e6:.2f}"

    lines = [
        "# Miras MLP memory: what the chunk kernels must keep serial",
        "",
        f"`python -m benchmarks.miras_mlp_split` (git {git}). Multiply-adds per chunk of {CHUNK} tokens (millions), "
        "counted from the products of `kernels/miras/chunk_mlp.py` (`_mlp_fwd_state_kernel`, "
        "`_mlp_fwd_output_kernel`, `_mlp_bwd_kernel`; `forward` and `backward`: the one-program kernels the split "
        "replaced; `backward (split)`: its chunk-parallel `READ` part as `a` and `b`, its serial `CARRY` part as "
        "`c`; the op list is in the module), `E = 4 D`. Classes: `a` independent of the weights (`A_1`), `b` the "
        "chunk-start weights and stored per-token tensors (chunk-parallel once a serial pass stores them; `b_dW` "
        "of them read the chunk-end `dW`, a second stored state), `c` the serial recurrence. `repeat`: products "
        "the kernel forms again within the chunk (each tile pass recomputes its `[b, BET]` intermediates). Per call: "
        f"B x T x H = {B} x {T} x {H}, {B * H * T // CHUNK} chunks; serial per program: what one (sequence, head) "
        f"program walks through {T // CHUNK} chunks.",
        "",
        "| memory | retention | D | direction | a | b | of which b_dW | c | of which repeat | serial share | "
        "serial share without repeats | GMAC per call | serial GMAC per program |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(
            f"| {r['memory']} | {r['retention']} | {r['D']} | {r['direction']} | {m(r['a'])} | {m(r['b'])} | "
            f"{m(r['b_dW'])} | {m(r['c'])} | {m(r['c_repeat'])} | {r['serial_share']:.0%} | "
            f"{r['serial_share_no_repeat']:.0%} | {r['gmac_per_call']:.1f} | {r['serial_gmac_per_program']:.3f} |"
        )
    return "\n".join(lines + NOTES) + "\n"


NOTES = [
    "",
    "Reading. In the forward the serial recurrence is the larger part: per chunk it forms the memory at the keys "
    "(`Z_1`, `Y`), `G = g_2 W_2^T` and the two end-state products `U_1, U_2`, five `b D E` products (six with "
    "`_chain`'s repeat of `Z_1`), against four `b D E`-sized products of the reads (`z_1`'s retained part, `A_1 g_1`, "
    "`S_2`, `M_2`; `b = D` at D = 64, so `b^2 E = b D E`). A chunk-parallel read kernel needs the chunk-start weights "
    "and, per token, `g_1 [T, E]` and `eta g_2 [T, D]`, and forms `H_1 = act((k c_1) W_1)` again (one more "
    "`b D E`) unless the state pass stores it. The weight-independent part `A_1` is under 4% of the forward. In the "
    "backward about 40% stays serial; most of the rest is the read's recomputation and its VJP (`b`), and a quarter "
    "to a third of every class is repeats of products already formed in the chunk. Memora's lag token adds its own "
    "serial step (six products with one nonzero row in each direction, sixteen more in the backward's lag VJP). "
    "The split forward (`forward (split)`, every memory) takes the reads out of the serial program but not the "
    "serial products: each (sequence, head) still walks the same `c` per chunk, 58% (66%) of the one-program "
    "forward's work for Moneta and Yaad, 56% (60%) for Memora, and the read kernel forms `H_1` once more. Memora's "
    "state pass stores the weights after each lag step, so the lag row becomes an ordinary row of the read and its "
    "separate read (two `b D E` products) goes: its split forward does less work than the one-program one.",
    "",
    "The split backward (`backward (split)`) runs the backward as two launches, since it is linear in the gradients "
    "of the outputs and of the end state: `READ`, per chunk, takes the reads back with no gradient at the chunk's "
    "end; `CARRY`, per (sequence, head), carries the weight gradient through the writes alone and adds what `READ` "
    "left at each chunk start. The serial program now walks the `c` column of that row per chunk instead of the "
    "whole one-program backward: 18.0 against 47.3 million multiply-adds per chunk for Moneta at D = 64 "
    "(2.6x shorter), 37.1 against 100.0 for Memora (2.7x). Both parts form the memory at the keys, `Z_1` and `G` "
    "in each pass and the key-side terms linear in both parts' gradients, but each runs two tile passes where the "
    "one-program backward ran three (the gradient of `g_2` joins the first), and `CARRY` reads Memora's lag "
    "weights instead of taking the step again: in all 13% more multiply-adds than the one-program backward for "
    "Moneta, 1% fewer for Memora, and one more state-sized buffer per chunk (`READ`'s weight gradient).",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.miras_mlp_split", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    table, git = rows(), git_tag(REPO)
    record = {"git": git, "chunk": CHUNK, "shape": SHAPE, "rows": table}
    write_record(args.out / "miras_mlp_split", record, markdown(table, git))
    print(markdown(table, git))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
