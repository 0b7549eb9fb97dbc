"""Miras kernels against their peers: forward and forward+backward time, peak memory, FLOPs and TFLOP/s.

    python -m benchmarks.speed                                    # on a GPU: fla's shapes, bf16, every method
    python -m benchmarks.speed --shapes 4x4096x16x64 --methods yaad gated_deltanet naive:yaad
    make bench BENCH_ARGS="--repeats 5"

Every method runs on inputs of one shape ``B x T x H x D`` in one process, so that ratios compare like with like:

- ``moneta``, ``yaad``, ``memora``: the presets (2-layer residual+LN MLP memory, expansion 4) on
  :func:`kernels.miras.chunk.chunk_miras`; ``*_linear``: the same bias and retention on the linear memory;
  ``naive:<preset>``: the same memory on :func:`kernels.miras.naive_chunk_miras` (torch autograd, same GPU);
- ``memora_tangent``: Memora with the tangent chunk read of the model's preset;
- ``gated_deltanet`` (fla ``chunk_gated_delta_rule``), ``deltanet`` (fla ``chunk_delta_rule``),
  ``ttt_linear`` (fla ``chunk_ttt_linear``), ``titans_linear`` (fla ``chunk_titans_linear``, torch),
  ``titans_pytorch`` (the ``titans-pytorch`` package's
  ``NeuralMemory`` with a 2-layer expansion-4 MLP memory, momentum off, per-token gradients taken at the
  weights of each ``chunk``-token batch: the chunk algorithm of section 5.4), ``sdpa`` (causal attention) and
  ``flash_attention`` (the ``flash-attn`` package's ``flash_attn_func``, where installed).

Times are medians of ``--repeats`` runs after ``--warmup``, synchronised on CUDA; peak memory is the
allocator's high-water mark over one forward+backward above what the inputs hold. ``FLOPS`` states the count
each family is charged (forward; forward+backward is charged 3x); TFLOP/s is that count over the time. A
method that cannot run says why in its row (``unavailable``: a package or CUDA is missing; ``unsupported``:
the kernel refuses the shape; ``out of memory``; ``failed``: any other error, e.g. a kernel that does not
compile for the shape). ``targets`` checks the performance targets at ``T = 4096``: linear memory fwd+bwd <= 1.5x fla's
``chunk_gated_delta_rule``; MLP memory <= 4x it and >= 10x both the torch path and titans-pytorch; peak memory
<= 2x Gated DeltaNet's.

``--decoders`` times one decoding step at each shape's ``B x H x D``: ``fused:<preset>`` on
``fused_recurrent_miras`` against ``chunk:<preset>`` and ``torch:<preset>`` (``naive_chunk_miras``), which write
the pending half chunk again (what a layer would do without the decoding kernel).
The Miras kernels run every launch config their autotuner holds unless ``MIRAS_AUTOTUNE=first`` (the record
says which): then the first alone, and their times bound the tuned ones from above.
Writes ``miras_<device>.json`` and ``.md`` with the device, versions and git sha, again after every row, so
that a run stopped by a time limit keeps the rows it measured. On a CPU (the Triton interpreter) only the harness
is meaningful.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from kernels.miras import PRESETS, MemorySpec, naive_chunk_miras, weight_shapes
from kernels.utils import autotune_mode, git_tag, timed, write_record

REPO = Path(__file__).resolve().parents[1]
SHAPES = ("4x4096x16x64", "8x2048x16x64", "1x16384x16x64", "4x4096x16x128")
"""fla's benchmark shapes ``B x T x H x D``."""
MLP_EXPANSION = 4
TTT_CHUNK = 16
"""fla's TTT and Titans kernels default to 16-token chunks; they run at their own default."""


@dataclasses.dataclass(frozen=True)
class Shape:
    B: int
    T: int
    H: int
    D: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            return cls(*(int(x) for x in text.lower().split("x")))
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"shape {text!r} is invalid; allowed: BxTxHxD as 4x4096x16x64") from None

    def __str__(self) -> str:
        return f"{self.B}x{self.T}x{self.H}x{self.D}"


class Unavailable(Exception):
    """The method cannot run here (a missing package or device); its row says why."""


def linear_flops(s: Shape, chunk: int) -> float:
    """Chunkwise linear memory: intra-chunk scores and mixing ``2C(K+V)``, read, write and residual ``6KV``."""
    return s.B * s.T * s.H * (2 * chunk * 2 * s.D + 6 * s.D * s.D)


def mlp_flops(s: Shape, chunk: int) -> float:
    """2-layer MLP memory (``E = 4D``): memory at the keys, its backprop, the read and the update ``14DE``;
    intra-chunk scores and mixing of both layers ``4C(D+E)``."""
    E = MLP_EXPANSION * s.D
    return s.B * s.T * s.H * (14 * s.D * E + 4 * chunk * (s.D + E))


def attention_flops(s: Shape, chunk: int) -> float:
    """Causal attention: ``QK^T`` and ``PV``, half of the square each."""
    return 2 * s.B * s.H * s.T * s.T * s.D


def _randn(s: Shape, g, device, dtype, last=None) -> torch.Tensor:
    return torch.randn(s.B, s.T, s.H, last or s.D, generator=g, device=device).to(dtype)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1).to(x.dtype)


def _gates(s: Shape, g, device):
    """Per-head learning rate, retention gate and Huber threshold in the ranges the layers produce."""
    eta = 0.1 * torch.rand(s.B, s.T, s.H, generator=g, device=device)
    alpha = 0.9 + 0.1 * torch.rand(s.B, s.T, s.H, generator=g, device=device)
    delta = 0.5 + torch.rand(s.B, s.T, s.H, generator=g, device=device)
    return eta, alpha, delta


def _need_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        raise Unavailable("needs CUDA")


def miras(spec: MemorySpec, naive: bool) -> Callable:
    def build(s: Shape, dtype, device, chunk: int):
        from kernels.miras.chunk import chunk_miras

        op = naive_chunk_miras if naive else chunk_miras
        g = torch.Generator(device=device).manual_seed(0)
        q, k = _unit(_randn(s, g, device, dtype)), _unit(_randn(s, g, device, dtype))
        v = _randn(s, g, device, dtype)
        eta, alpha, delta = _gates(s, g, device)
        leaves = [q, k, v, eta, alpha] + ([delta] if spec.needs_delta else [])
        for x in leaves:
            x.requires_grad_()
        extra = delta if spec.needs_delta else None
        return (lambda: op(q, k, v, eta, alpha, spec, extra, chunk_size=chunk)[0]), leaves

    return build


def gated_deltanet(s: Shape, dtype, device, chunk: int):
    _need_cuda(device)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = _unit(_randn(s, g, device, dtype)), _unit(_randn(s, g, device, dtype)), _randn(s, g, device, dtype)
    eta, alpha, _ = _gates(s, g, device)
    log_alpha, beta = alpha.log(), eta.to(dtype)
    leaves = [q, k, v, log_alpha, beta]
    for x in leaves:
        x.requires_grad_()
    return (lambda: chunk_gated_delta_rule(q, k, v, log_alpha, beta)[0]), leaves


def deltanet(s: Shape, dtype, device, chunk: int):
    _need_cuda(device)
    from fla.ops.delta_rule import chunk_delta_rule

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = _unit(_randn(s, g, device, dtype)), _unit(_randn(s, g, device, dtype)), _randn(s, g, device, dtype)
    beta = _gates(s, g, device)[0].to(dtype)
    leaves = [q, k, v, beta]
    for x in leaves:
        x.requires_grad_()
    return (lambda: chunk_delta_rule(q, k, v, beta)[0]), leaves


def ttt_linear(s: Shape, dtype, device, chunk: int):
    _need_cuda(device)
    from fla.ops.ttt import chunk_ttt_linear

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = _unit(_randn(s, g, device, dtype)), _unit(_randn(s, g, device, dtype)), _randn(s, g, device, dtype)
    eta = (0.1 * torch.rand(s.B, s.T, s.H, 1, generator=g, device=device)).to(dtype)
    w = torch.ones(s.H, s.D, device=device, dtype=dtype)
    b = torch.zeros(s.H, s.D, device=device, dtype=dtype)
    h0 = (s.D**-0.5 * torch.randn(s.B, s.H, s.D, s.D, generator=g, device=device)).float()
    leaves = [q, k, v, eta, w, b, h0]
    for x in leaves:
        x.requires_grad_()

    def fn():
        return chunk_ttt_linear(q, k, v, w, b, eta, chunk_size=TTT_CHUNK, initial_state=h0)[0]

    return fn, leaves


def titans_linear(s: Shape, dtype, device, chunk: int):
    _need_cuda(device)
    from fla.ops.titans import chunk_titans_linear

    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (_randn(s, g, device, torch.float32).transpose(1, 2).contiguous() for _ in range(3))
    q, k = _unit(q), _unit(k)  # fp32: its torch code mixes the inputs with an fp32 state
    theta, alpha = (0.1 * torch.rand(s.B, s.H, s.T, 1, generator=g, device=device) for _ in range(2))
    momentum = torch.zeros(s.B, s.H, s.T, 1, device=device)
    w, b = torch.ones(s.H, s.D, device=device), torch.zeros(s.H, s.D, device=device)
    leaves = [q, k, v, theta, alpha]
    for x in leaves:
        x.requires_grad_()

    def fn():
        args = (w, b, theta, alpha, momentum, 1e-6, TTT_CHUNK, None, False)
        return chunk_titans_linear(q, k, v, *args)[0]

    return fn, leaves


def titans_pytorch(s: Shape, dtype, device, chunk: int):
    try:
        from titans_pytorch import NeuralMemory
    except ImportError as error:
        raise Unavailable(f"titans-pytorch is not installed ({error})") from None
    model_kwargs = {"depth": 2, "expansion_factor": float(MLP_EXPANSION)}
    memory = NeuralMemory(
        s.H * s.D, chunk_size=1, batch_size=chunk, dim_head=s.D, heads=s.H, momentum=False,
        default_model_kwargs=model_kwargs,
    ).to(device=device, dtype=dtype)  # fmt: skip
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(s.B, s.T, s.H * s.D, generator=g, device=device).to(dtype).requires_grad_()
    return (lambda: memory(x)[0]), [x]


def sdpa(s: Shape, dtype, device, chunk: int):
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (_randn(s, g, device, dtype).transpose(1, 2).requires_grad_() for _ in range(3))
    return (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)), [q, k, v]


def flash_attention(s: Shape, dtype, device, chunk: int):
    _need_cuda(device)
    try:
        from flash_attn import flash_attn_func
    except ImportError as error:
        raise Unavailable(f"flash-attn is not installed ({error})") from None
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (_randn(s, g, device, dtype).requires_grad_() for _ in range(3))
    return (lambda: flash_attn_func(q, k, v, causal=True)), [q, k, v]


def _linear(spec: MemorySpec) -> MemorySpec:
    return dataclasses.replace(spec, arch="linear")


def decoder(spec: MemorySpec, how: str) -> Callable:
    """One token at position ``chunk // 2`` of a chunk: ``fused`` decodes it from the running state
    (:func:`fused_recurrent_miras`); ``chunk`` and ``torch`` write the pending tokens again from the chunk start
    (:func:`chunk_miras`, :func:`naive_chunk_miras`), as a layer does without the decoding kernel."""

    def build(s: Shape, dtype, device, chunk: int):
        from kernels.miras.chunk import chunk_miras
        from kernels.miras.fused_recurrent import fused_recurrent_miras
        from kernels.miras.naive import simplex

        g = torch.Generator(device=device).manual_seed(0)
        n = Shape(s.B, chunk // 2 + 1, s.H, s.D)
        q, k = _unit(_randn(n, g, device, dtype)), _unit(_randn(n, g, device, dtype))
        v = _randn(n, g, device, dtype)
        eta, alpha, delta = _gates(n, g, device)
        delta = delta if spec.needs_delta else None
        start = tuple(
            torch.randn(s.B, s.H, fan_in, fan_out, generator=g, device=device) / fan_in**0.5
            for fan_in, fan_out in weight_shapes(spec, s.D, s.D)
        )
        if spec.retention == "kl":
            start = tuple(simplex(w, spec) for w in start)
        if how == "fused":
            pending = [x[:, :-1] for x in (q, k, v, eta, alpha)] + [None if delta is None else delta[:, :-1]]
            first = start[0] if spec.arch == "linear" else start
            state = fused_recurrent_miras(*pending[:5], spec, pending[5], {"start": first, "position": 0}, chunk)[1]
            last = [x[:, -1:] for x in (q, k, v, eta, alpha)] + [None if delta is None else delta[:, -1:]]
            return lambda: fused_recurrent_miras(*last[:5], spec, last[5], state, chunk)[0]
        op = chunk_miras if how == "chunk" else naive_chunk_miras
        initial = {"accumulator" if spec.retention == "lq" else "weights": start}
        return lambda: op(q, k, v, eta, alpha, spec, delta, initial, chunk_size=chunk)[0][:, -1:]

    return build


TANGENT = PRESETS["memora"].replace(kl_read="tangent")
"""Memora as the model's preset reads its chunks (``miras.presets.MEMORIES``)."""
METHODS: dict[str, tuple[Callable, Callable]] = {
    **{name: (miras(spec, False), mlp_flops) for name, spec in PRESETS.items()},
    **{f"{name}_linear": (miras(_linear(spec), False), linear_flops) for name, spec in PRESETS.items()},
    **{f"naive:{name}": (miras(spec, True), mlp_flops) for name, spec in PRESETS.items()},
    "memora_tangent": (miras(TANGENT, False), mlp_flops),
    "gated_deltanet": (gated_deltanet, linear_flops),
    "deltanet": (deltanet, linear_flops),
    "ttt_linear": (ttt_linear, linear_flops),
    "titans_linear": (titans_linear, linear_flops),
    "titans_pytorch": (titans_pytorch, mlp_flops),
    "sdpa": (sdpa, attention_flops),
    "flash_attention": (flash_attention, attention_flops),
}
"""name -> (build(shape, dtype, device, chunk) -> (forward, leaves), forward FLOPs(shape, chunk))."""
DECODERS: dict[str, Callable] = {
    f"{how}:{name}{suffix}": decoder(spec if not suffix else _linear(spec), how)
    for how in ("fused", "chunk", "torch")
    for name, spec in PRESETS.items()
    for suffix in ("", "_linear")
}
"""name -> build(shape, dtype, device, chunk) -> decode one token (``how:preset``, see :func:`decoder`)."""
FLOPS = {
    "linear memory": linear_flops.__doc__,
    "MLP memory": mlp_flops.__doc__,
    "attention": attention_flops.__doc__,
}


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _status(error: Exception) -> str:
    """A row's status for the error that stopped its method."""
    if isinstance(error, (Unavailable, ImportError)):
        return f"unavailable: {error}"
    if isinstance(error, torch.OutOfMemoryError):
        return "out of memory"
    if isinstance(error, (NotImplementedError, ValueError)):
        return f"unsupported: {_first_line(error)}"
    return f"failed: {type(error).__name__}: {_first_line(error)}"


def measure(method: str, s: Shape, dtype, device, chunk: int, warmup: int, repeats: int) -> dict:
    """One row: times, peak memory, FLOPs and TFLOP/s of ``method`` at ``s``, or its ``status``."""
    build, flops = METHODS[method]
    row: dict = {"method": method, "shape": str(s), "status": "ok"}
    try:
        forward, leaves = build(s, dtype, device, chunk)
        grad = None

        def fwd():
            with torch.no_grad():
                forward()

        def fwd_bwd():
            nonlocal grad
            out = forward()
            grad = torch.randn_like(out) if grad is None else grad
            torch.autograd.grad(out, leaves, grad, allow_unused=True)

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        row["fwd_s"] = timed(fwd, device, warmup, repeats)
        row["fwd_bwd_s"] = timed(fwd_bwd, device, warmup, repeats)
        if device.type == "cuda":
            row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    except Exception as error:  # a compile failure (e.g. Triton's OutOfResources) must not end the other rows
        return {**row, "status": _status(error)}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["gflop_fwd"] = flops(s, chunk) / 1e9
    row["tflops_fwd"] = row["gflop_fwd"] / row["fwd_s"] / 1e3
    row["tflops_fwd_bwd"] = 3 * row["gflop_fwd"] / row["fwd_bwd_s"] / 1e3
    return row


def measure_decode(method: str, s: Shape, dtype, device, chunk: int, warmup: int, repeats: int) -> dict:
    """One decoding row: seconds per token step of ``B`` sequences and tokens per second, or its ``status``."""
    row: dict = {"method": method, "shape": f"{s.B}x{s.H}x{s.D}", "position": chunk // 2, "status": "ok"}
    try:
        with torch.no_grad():
            step = DECODERS[method](s, dtype, device, chunk)
            row["step_s"] = timed(step, device, warmup, repeats)
    except Exception as error:
        return {**row, "status": _status(error)}
    row["tokens_per_s"] = s.B / row["step_s"]
    return row


def _ratio(rows: dict, shape: str, a: str, b: str, key: str) -> float | None:
    ra, rb = rows.get((a, shape)), rows.get((b, shape))
    if not ra or not rb or key not in ra or key not in rb:
        return None
    return ra[key] / rb[key]


def targets(results: list[dict]) -> list[dict]:
    """The performance targets at every ``T = 4096`` shape; ``ratio`` is None where a side did not run."""
    rows = {(r["method"], r["shape"]): r for r in results if r["status"] == "ok"}
    shapes = sorted({r["shape"] for r in results if Shape.parse(r["shape"]).T == 4096})
    checks = []

    def check(name, shape, a, b, key, limit, at_least=False):
        ratio = _ratio(rows, shape, a, b, key) if not at_least else _ratio(rows, shape, b, a, key)
        met = None if ratio is None else (ratio >= limit if at_least else ratio <= limit)
        checks.append({"target": name, "shape": shape, "ratio": ratio, "limit": limit, "met": met})

    for shape in shapes:
        for preset in PRESETS:
            check(f"{preset}_linear fwd+bwd / gated_deltanet <= 1.5", shape, f"{preset}_linear", "gated_deltanet",
                  "fwd_bwd_s", 1.5)  # fmt: skip
        for preset in PRESETS:
            check(f"naive:{preset} / {preset} fwd+bwd >= 10", shape, preset, f"naive:{preset}", "fwd_bwd_s", 10,
                  at_least=True)  # fmt: skip
            check(f"titans_pytorch / {preset} fwd+bwd >= 10", shape, preset, "titans_pytorch", "fwd_bwd_s", 10,
                  at_least=True)  # fmt: skip
            check(f"{preset} fwd+bwd / gated_deltanet <= 4", shape, preset, "gated_deltanet", "fwd_bwd_s", 4)
        for method in (*PRESETS, *(f"{p}_linear" for p in PRESETS)):
            check(f"{method} peak memory / gated_deltanet <= 2", shape, method, "gated_deltanet", "peak_mib", 2)
    return checks


def run(args: argparse.Namespace, save: Callable[[dict], None] | None = None) -> dict:
    """Every method at every shape, then every decoder; ``save`` gets the record after each row, so that a run
    stopped part-way (a time limit) leaves what it measured."""
    from kernels.utils import device_name

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    versions = {"torch": torch.__version__}
    for package in ("triton", "fla", "titans_pytorch"):
        try:
            versions[package] = getattr(__import__(package), "__version__", "unknown")
        except ImportError:
            versions[package] = None
    results, decoding = [], []
    record = {
        "device": device_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "chunk_size": args.chunk_size,
        "autotune": autotune_mode(),
        "versions": versions,
        "git": git_tag(REPO),
        "command": "python -m benchmarks.speed " + " ".join(args.argv),
        "flops": FLOPS,
        "results": results,
        "targets": [],
        "decoding": decoding,
    }

    def add(rows: list, row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        record["targets"] = targets(results)
        if save is not None:
            save(record)

    for s in args.shapes:
        for method in args.methods:
            add(results, measure(method, s, dtype, device, args.chunk_size, args.warmup, args.repeats))
    for s in dict.fromkeys(Shape(s.B, 1, s.H, s.D) for s in args.shapes):
        for method in args.decoders:
            add(decoding, measure_decode(method, s, dtype, device, args.chunk_size, args.warmup, args.repeats))
    return record


def _cell(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def to_markdown(record: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v)
    lines = [
        "# Miras kernels against their peers",
        "",
        f"Device: {record['device']}; {record['dtype']}; chunk {record['chunk_size']}; "
        f"autotune {record.get('autotune', 'all')}; {versions}; "
        f"git {record['git']}. Command: `{record['command']}`.",
        "",
        "| method | B x T x H x D | fwd ms | fwd+bwd ms | fwd+bwd / GDN | / DeltaNet | / SDPA | peak MiB | "
        "peak / GDN | GFLOP fwd | TFLOP/s fwd | TFLOP/s fwd+bwd | status |",
        "|" + " --- |" * 13,
    ]
    rows = {(r["method"], r["shape"]): r for r in record["results"] if r["status"] == "ok"}
    for r in record["results"]:
        ms = [_cell(1e3 * r[k] if k in r else None, ".3f") for k in ("fwd_s", "fwd_bwd_s")]
        ratios = [
            _cell(_ratio(rows, r["shape"], r["method"], peer, key), ".2f")
            for peer, key in (
                ("gated_deltanet", "fwd_bwd_s"),
                ("deltanet", "fwd_bwd_s"),
                ("sdpa", "fwd_bwd_s"),
                ("gated_deltanet", "peak_mib"),
            )
        ]
        lines.append(
            f"| {r['method']} | {r['shape']} | {ms[0]} | {ms[1]} | {' | '.join(ratios[:3])} | "
            f"{_cell(r.get('peak_mib'), '.0f')} | {ratios[3]} | "
            f"{_cell(r.get('gflop_fwd'), '.1f')} | "
            f"{_cell(r.get('tflops_fwd'), '.2f')} | {_cell(r.get('tflops_fwd_bwd'), '.2f')} | {r['status']} |"
        )
    lines += ["", "## Targets (T = 4096)", "", "| target | shape | ratio | met |", "| --- | --- | --- | --- |"]
    for t in record["targets"]:
        met = "not run" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {t['shape']} | {_cell(t['ratio'], '.2f')} | {met} |")
    lines += ["", "## Decoding one token (position chunk / 2; `chunk`, `torch`: the pending tokens written again)", ""]
    lines += [
        "| method | B x H x D | ms / step | tokens/s | chunk / fused | status |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    steps = {(r["method"], r["shape"]): r["step_s"] for r in record.get("decoding", []) if r["status"] == "ok"}
    for r in record.get("decoding", []):
        how, name = r["method"].split(":")
        fused, pending = steps.get((f"fused:{name}", r["shape"])), steps.get((f"chunk:{name}", r["shape"]))
        ratio = pending / fused if how == "fused" and fused and pending else None
        lines.append(
            f"| {r['method']} | {r['shape']} | {_cell(1e3 * r['step_s'] if 'step_s' in r else None, '.3f')} | "
            f"{_cell(r.get('tokens_per_s'), '.0f')} | {_cell(ratio, '.1f')} | {r['status']} |"
        )
    lines += ["", "## FLOPs charged (forward; forward+backward = 3x)", ""]
    lines += [f"- {family}: {' '.join(doc.split())}" for family, doc in record["flops"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", type=Shape.parse, nargs="+", default=[Shape.parse(s) for s in SHAPES])
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS), metavar="METHOD",
                        help=f"allowed: {', '.join(METHODS)}")  # fmt: skip
    parser.add_argument("--decoders", nargs="*", choices=tuple(DECODERS), default=list(DECODERS), metavar="DECODER",
                        help=f"one-token decoding at each shape's B x H x D (none: --decoders); allowed: "
                        f"{', '.join(DECODERS)}")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=64, help="chunk of the Miras memories and titans-pytorch")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "benchmarks")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    stem = args.out / f"miras_{args.device.split(':')[0]}"
    record = run(args, save=lambda record: write_record(stem, record, to_markdown(record)))
    write_record(stem, record, to_markdown(record))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
