"""The chunkwise Miras memory on Triton (section 5.4): the entry point :func:`chunk_miras` and what it accepts.

:func:`chunk_miras` transcribes ``naive_chunk_miras`` (``read='chunk'``), forward and backward, varlen, initial and
final state. The linear memory ``M(x) = x W`` runs on the chunk-parallel kernels of ``chunk_linear.py`` (a serial
state pass per sequence, head and value block, everything else over all chunks at once); the 2-layer MLP memory
on ``chunk_mlp.py``. Both rest on the device functions of ``common.py`` and the decay-weighted products of
``decay.py`` (16-row blocks, never ``1 / exp(g)``, so any gate value is safe). For a chunk of ``BT`` tokens, with
``g_i = sum_{m <= i} log alpha_m`` (channel-wise on the key axis) and the lq scale ``c = ||S||_q^-(q-2)`` (1 unless
``retention='lq'``)::

    R = (k * c) S - v,   P = psi(R)                           gradients at the chunk start (Eq. 28)
    A_ij = sum_f (q * c)_if (eta * k)_jf exp(g_if - g_jf),  j <= i
    o = (q * c * exp(g)) S - A P                              the dual read of every token (Eq. 29)
    S' = exp(g_last) S - (eta * k * exp(g_last - g))^T P      the chunk's end state

``psi`` is ``dl/dM(k)`` of the attentional bias (``naive.bias_grad``, Eq. 8-17). See ``kernels/miras/README.md``
for the derivation of each gradient.

Covered: every bias; for the linear memory retention ``none``, ``l2``, ``lq`` (both scopes), ``elastic`` and
``kl``, for the 2-layer MLP memory ``none``, ``l2``, ``lq`` and ``kl`` (Moneta, Yaad, Memora); ``algorithm='gd'``.
Memora's ``kl`` takes the exact step on each chunk's first token (the lag token, Eq. 30) and carries
``c Softmax(e^{g_last} log S - U)`` out of the chunk; the other rows read the weight-space steps
(``kl_read='linear'``) or the first-order softmax step (``'tangent'``: ``common._tangent_rows`` and centred
queries in ``A``). Anything else (momentum) raises ``NotImplementedError`` naming the field, and the layer stays
on the torch path.
"""

from __future__ import annotations

import torch
import triton

from kernels.miras.chunk_linear import ChunkLinearFunction, whole_rows
from kernels.miras.chunk_mlp import chunk_miras_mlp
from kernels.miras.common import kernel_gates
from kernels.miras.decay import check_chunk_size
from kernels.miras.naive import _initial, _lq_normalise
from kernels.miras.spec import MemorySpec


def check_supported(spec: MemorySpec, decoding: bool = True) -> None:
    """Raise ``NotImplementedError`` naming the field when ``spec`` is not on the Triton kernels: the chunk kernels
    and, with ``decoding``, the decoding ones (``fused_recurrent_miras``), which continue a chunk run and so must
    read as it does. Memora's tangent read (``kl_read='tangent'``) is on the chunk kernels only."""
    mlp = spec.arch == "mlp"
    for name, value, allowed in (
        ("retention", spec.retention, ("none", "l2", "lq", "kl") if mlp else ("none", "l2", "lq", "elastic", "kl")),
        ("algorithm", spec.algorithm, ("gd",)),
        ("read", spec.read, ("chunk",)),
        ("depth", spec.depth, (2,) if mlp else (spec.depth,)),
        ("residual_norm", spec.residual_norm, (True,) if mlp else (spec.residual_norm,)),
        ("kl_axis", spec.kl_axis, ("fan_in",) if spec.retention == "kl" else (spec.kl_axis,)),
        ("kl_lag", spec.kl_lag, (True,) if spec.retention == "kl" else (spec.kl_lag,)),
        # the kernels' decay is on the key axis, where A factorises; a value-axis decay would give each value
        # column its own A
        ("gate_axis", spec.gate_axis, (spec.gate_axis,) if mlp else ("key",)),
    ):
        if value not in allowed:
            raise NotImplementedError(
                f"memory.{name}={value!r} has no Triton chunk kernel yet; on the kernel: "
                + ", ".join(map(repr, allowed))
            )
    if decoding and spec.retention == "kl" and spec.kl_read != "linear":
        raise NotImplementedError(
            f"memory.kl_read={spec.kl_read!r} has no Triton decoding kernel (fused_recurrent_miras) yet; on the "
            "kernel: 'linear'"
        )


def max_head_dim(spec: MemorySpec) -> int:
    """Widest head (padded to a power of two) whose programs fit the 227 KB of shared memory an sm_90 block may use,
    from the ahead-of-time compile in ``reports/benchmarks/miras_resources_sm_90a.md`` (chunk 64): 128 for every
    memory. The linear memory's five kernels need at most 192 KB at ``D = 128`` with whole 128-column value rows
    (lq; the robust bias, the heaviest of the norm-based ones, ``--bias robust``: also 192 KB), 96 KB in 32-column
    value blocks; the MLP memories at most 192 KB with the 32-column tiles of ``chunk_mlp.tile_e``.
    """
    return 128


def check_head_dim(spec: MemorySpec, head_dim: int) -> None:
    """Raise ``NotImplementedError`` when heads of ``head_dim`` are too wide for the GPU programs of ``spec``."""
    padded, widest = max(16, triton.next_power_of_2(head_dim)), max_head_dim(spec)
    if padded > widest:
        raise NotImplementedError(
            f"head_dim={head_dim} (padded to {padded}) is wider than the {widest} the Triton kernels fit in a GPU "
            f"block's shared memory for memory.arch={spec.arch!r}, memory.retention={spec.retention!r}, "
            f"memory.bias={spec.bias!r}"
        )


VALUE_BLOCK = 64
"""Widest value block of the linear memory's programs (:func:`value_block`)."""


def value_block(spec: MemorySpec, K: int, V: int) -> int:
    """Value columns per program (padded): ``BK x BV <= 4096`` state elements, at most :data:`VALUE_BLOCK` (64 at
    ``K = 64``; 32 at 128, where the chunk-parallel kernels need at most 96 KB of shared memory against 192 KB with
    whole rows, and the state passes get 4x the programs: sm_90a, ``python -m benchmarks.miras_resources``). Every
    column of ``S`` evolves on its own except under the lq scale (a norm over ``S``) and the biases that take the
    norm of the residual (Huber's head switch and norm form, the robust bias): those keep the whole ``V`` in one
    program. The programs' key-side gradients add up."""
    padded, BK = max(16, triton.next_power_of_2(V)), max(16, triton.next_power_of_2(K))
    return padded if whole_rows(spec) else min(padded, VALUE_BLOCK, max(16, 4096 // BK))


def program_grid(spec: MemorySpec, N: int, H: int, K: int, V: int) -> tuple[int, ...]:
    """The programs that walk all chunks of a sequence, for ``N`` sequences of ``H`` heads: one per (sequence, head)
    for the MLP memory, times the value blocks (:func:`value_block`) for the linear memory's state passes
    (``chunk_linear.launch_grids`` has its chunk-parallel kernels)."""
    if spec.arch == "mlp":
        return (N, H)
    return (N, H, triton.cdiv(V, value_block(spec, K, V)))


def chunk_miras(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    alpha: torch.Tensor | None,
    spec: MemorySpec,
    delta: torch.Tensor | None = None,
    initial_state=None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict | None]:
    """The chunkwise Miras memory on Triton (Eq. 28-29); the same function as :func:`naive_chunk_miras`.

    Args:
        q, k: ``[B, T, H, K]`` queries and keys; v: ``[B, T, H, V]`` values (fp32, fp16 or bf16).
        eta, alpha: learning rate and retention gate, ``[B, T, H]`` or channel-wise ``[B, T, H, K]``
            (``alpha`` may be None for ``retention='none'``).
        spec: the memory (see :func:`check_supported`).
        delta: Huber threshold / robust radius ``[B, T, H]`` or ``[B, T, H, V]`` when ``spec.needs_delta``.
        initial_state: as :func:`naive_chunk_miras` (``[N, H, K, V]`` per sequence with ``cu_seqlens``).
        output_final_state: also return the final state dict (fp32).
        cu_seqlens: ``[N + 1]`` offsets of ``N`` sequences packed into a batch of one; chunks restart at
            every sequence.
        chunk_size: tokens per chunk: 16, 32 or 64 (``kernels.miras.decay``).

    Returns:
        ``o [B, T, H, V]`` in ``q``'s dtype and the final state dict (or None).
    """
    check_supported(spec, decoding=False)
    check_chunk_size(chunk_size)
    if spec.needs_delta and delta is None:
        raise ValueError(f"memory.bias={spec.bias!r} needs delta (the Huber threshold or robust radius)")
    if spec.retention != "none" and alpha is None:
        raise ValueError(f"memory.retention={spec.retention!r} needs alpha (the retention gate)")
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError(f"cu_seqlens needs a batch of one packed sequence, got batch {q.shape[0]}")
    if spec.arch == "mlp":
        return chunk_miras_mlp(
            q, k, v, eta, alpha, spec, delta, initial_state, output_final_state, cu_seqlens, chunk_size
        )
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    h0 = None
    if initial_state is not None or spec.retention == "kl":
        # Memora starts from the uniform simplex, not from zeros: the first lag step takes its gradient there
        h0 = _initial(initial_state, spec, N, H, K, V, q.float())[0][0].float().contiguous()
    args = (q.contiguous(), k.contiguous(), v.contiguous(), *kernel_gates(spec, eta, alpha, delta, K, V), h0, spec,
            chunk_size, None if cu_seqlens is None else cu_seqlens.to(torch.int32), output_final_state)  # fmt: skip
    o, ht = ChunkLinearFunction.apply(*args, value_block(spec, K, V))
    if not output_final_state:
        return o, None
    final = {"weights": (_lq_normalise(ht, spec),) if spec.retention == "lq" else (ht,)}
    if spec.retention == "lq":
        final["accumulator"] = (ht,)
    return o, final


__all__ = ["check_head_dim", "check_supported", "chunk_miras", "max_head_dim", "value_block"]
