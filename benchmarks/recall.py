"""How well each Miras memory returns what was written to it: ``python -m benchmarks.recall``.

The memory op alone, on synthetic associations: ``pairs`` unit keys with values of norm ``value_norm`` are
written one per token (after ``prefix`` filler writes), then every key is read back with writes off
(``eta = 0``, ``alpha = 1``), so the reads see the final memory through the op itself, inside a chunk or after
its end as the pairs fall. Scores, averaged over ``batch`` sequences:

- ``acc``: the share of reads whose nearest value (Euclidean, among the written ones) is their own;
- ``cos``: the mean cosine between the read's change from the unwritten memory and the value's change that
  the write asked for (``v - M_0(k)``).

Gated DeltaNet's memory is the linear memory with the l2 bias and l2 retention at ``chunk_size=1`` (exact, as
fla's chunked delta rule is); DeltaNet's the same without retention. The MLP memories run with the layer's LN
gain (``MixerConfig.memory_ln_gain``) through the same change of variables as the layer. Besides recall, the
report measures the write influence (how much the reads change when every write is switched off) and the chunk
form's distance from the per-token recurrence at the layer's initial gates. Writes ``reports/miras/recall.md``
and ``.json`` (``--out``); ``--quick`` runs a reduced grid for tests.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kernels.miras import MemorySpec, naive_chunk_miras, naive_recurrent_miras, weight_shapes
from kernels.miras.naive import simplex
from miras.layers.miras import gained_read, unit_gain_inputs
from miras.presets import MEMORIES as MODEL_MEMORIES
from miras.presets import MIRAS_GATES

GDN = MemorySpec(arch="linear", bias="l2", retention="l2")
DELTANET = MemorySpec(arch="linear", bias="l2", retention="none")
MEMORIES: dict[str, tuple[MemorySpec, int | None]] = {
    "gated_deltanet": (GDN, 1),
    "deltanet": (DELTANET, 1),
    "moneta": (MODEL_MEMORIES["moneta"], None),
    "yaad": (MODEL_MEMORIES["yaad"], None),
    "memora": (MODEL_MEMORIES["memora"], None),
    "memora (token read)": (MODEL_MEMORIES["memora"].replace(read="token"), None),
    "memora (linear read)": (MODEL_MEMORIES["memora"].replace(kl_read="linear"), None),
}
"""Name -> (memory, forced chunk size): the delta rules are exact (chunk 1), the MLP memories chunked as the
models' presets hold them. Memora's preset reads a chunk through the first-order softmax step
(``kl_read='tangent'``); the last two rows read from its exact per-token weights (``read='token'``, torch only)
and from the paper's weight-space steps (``kl_read='linear'``, what the Triton kernel computes)."""


@dataclass(frozen=True)
class Probe:
    pairs: int = 16
    d: int = 32
    prefix: int = 0
    chunk_size: int = 64
    value_norm: float = 1.0
    gain: float | None = 1.0
    """Norm of the LN branch at init (``MixerConfig.memory_ln_gain``); None: the paper's LN without gain."""
    delta: float = 1.0
    batch: int = 16
    seed: int = 0


def initial_memory(spec: MemorySpec, batch: int, d: int, gen: torch.Generator) -> dict:
    """The layer's initial memory (``MirasLayer._init_weight``): zeros for the linear memory, else Gaussian."""
    weights = []
    for fan_in, fan_out in weight_shapes(spec, d, d):
        if spec.arch == "linear" and spec.retention != "kl":
            w = torch.zeros(batch, 1, fan_in, fan_out)
        else:
            w = torch.randn(batch, 1, fan_in, fan_out, generator=gen) / math.sqrt(fan_in)
        weights.append(simplex(w, spec) if spec.retention == "kl" else w)
    return {"accumulator" if spec.retention == "lq" else "weights": tuple(weights)}


def _gain(spec: MemorySpec, probe: Probe) -> torch.Tensor | None:
    """The per-head LN gain ``[1]`` of an MLP memory (``probe.gain / sqrt(d)``), None without one."""
    if probe.gain is None or spec.arch != "mlp":
        return None
    return torch.full((1,), probe.gain / math.sqrt(probe.d), dtype=torch.float64)


def _run(spec, chunk_size, q, k, v, eta, alpha, delta, state, gain):
    if gain is not None:
        v, eta, delta = unit_gain_inputs(spec, gain, k, v, eta, delta)
    o, _ = naive_chunk_miras(q, k, v, eta, alpha, spec, delta, initial_state=state, chunk_size=chunk_size)
    return o if gain is None else gained_read(gain, q, o)


def recall(spec: MemorySpec, eta: float, alpha: float, probe: Probe, chunk_size: int | None = None) -> dict:
    """``{"acc", "cos"}`` of ``probe`` on memory ``spec`` with constant gates ``eta`` and ``alpha``."""
    gen = torch.Generator().manual_seed(probe.seed)
    B, N, d, P = probe.batch, probe.pairs, probe.d, probe.prefix
    T = P + N
    k = F.normalize(torch.randn(B, T + N, 1, d, generator=gen, dtype=torch.float64), dim=-1)
    k[:, T:] = k[:, P:T]
    v = probe.value_norm * F.normalize(torch.randn(B, T + N, 1, d, generator=gen, dtype=torch.float64), dim=-1)
    writes = torch.arange(T + N) < T
    eta_t = torch.where(writes, eta, 0.0).to(torch.float64)[None, :, None].expand(B, T + N, 1)
    alpha_t = torch.where(writes, alpha, 1.0).to(torch.float64)[None, :, None].expand(B, T + N, 1)
    delta = torch.full((B, T + N, 1), probe.delta, dtype=torch.float64) if spec.needs_delta else None
    state = initial_memory(spec, B, d, gen)
    state = {key: tuple(w.double() for w in ws) for key, ws in state.items()}
    gain = _gain(spec, probe)
    C = chunk_size or probe.chunk_size
    read = _run(spec, C, k, k, v, eta_t, alpha_t, delta, state, gain)[:, T:, 0]
    before = _run(spec, C, k, k, v, torch.zeros_like(eta_t), torch.ones_like(alpha_t), delta, state, gain)[:, T:, 0]
    values = v[:, P:T, 0]
    acc = (torch.cdist(read, values).argmin(-1) == torch.arange(N)).double().mean()
    cos = F.cosine_similarity(read - before, values - before, dim=-1).mean()
    return {"acc": acc.item(), "cos": cos.item()}


def _lm_like_inputs(T: int, d: int, eta: float, alpha: float, gen: torch.Generator, batch: int = 4):
    """Keys correlated as a language model's are (a shared direction plus noise), values of norm ~1."""
    shared = torch.randn(batch, 1, 1, d, generator=gen, dtype=torch.float64)
    k = F.normalize(shared + torch.randn(batch, T, 1, d, generator=gen, dtype=torch.float64), dim=-1)
    q = F.normalize(shared + torch.randn(batch, T, 1, d, generator=gen, dtype=torch.float64), dim=-1)
    v = F.normalize(torch.randn(batch, T, 1, d, generator=gen, dtype=torch.float64), dim=-1)
    eta_t = torch.full((batch, T, 1), eta, dtype=torch.float64)
    alpha_t = torch.full((batch, T, 1), alpha, dtype=torch.float64)
    delta = torch.ones(batch, T, 1, dtype=torch.float64)
    return q, k, v, eta_t, alpha_t, delta


def write_influence(spec: MemorySpec, eta: float, alpha: float, probe: Probe, T: int = 256, after: int = 128):
    """``||o - o_no_writes|| / ||o||`` over tokens ``>= after``: how much the writes change the reads."""
    gen = torch.Generator().manual_seed(probe.seed)
    q, k, v, eta_t, alpha_t, delta = _lm_like_inputs(T, probe.d, eta, alpha, gen)
    delta = delta if spec.needs_delta else None
    state = initial_memory(spec, q.shape[0], probe.d, gen)
    gain = _gain(spec, probe)
    o = _run(spec, probe.chunk_size, q, k, v, eta_t, alpha_t, delta, state, gain)[:, after:]
    o0 = _run(spec, probe.chunk_size, q, k, v, 0 * eta_t, alpha_t, delta, state, gain)[:, after:]
    return ((o - o0).norm() / o.norm().clamp_min(1e-30)).item()


def chunk_distance(spec: MemorySpec, eta: float, alpha: float, probe: Probe, T: int = 256) -> float:
    """Relative RMS distance of the chunk form from the per-token recurrence (the specification)."""
    gen = torch.Generator().manual_seed(probe.seed)
    q, k, v, eta_t, alpha_t, delta = _lm_like_inputs(T, probe.d, eta, alpha, gen)
    delta = delta if spec.needs_delta else None
    state = initial_memory(spec, q.shape[0], probe.d, gen)
    gain = _gain(spec, probe)
    if gain is None:
        vv, ee, dd = v, eta_t, delta
    else:
        vv, ee, dd = unit_gain_inputs(spec, gain, k, v, eta_t, delta)
    chunk, _ = naive_chunk_miras(q, k, vv, ee, alpha_t, spec, dd, initial_state=state, chunk_size=probe.chunk_size)
    exact, _ = naive_recurrent_miras(q, k, vv, ee, alpha_t, spec, dd, initial_state=state)
    return ((chunk - exact).norm() / exact.norm()).item()


def _table(header: list[str], rows: list[list]) -> list[str]:
    def fmt(x):
        if not isinstance(x, float):
            return str(x)
        return f"{x:.2f}" if 0.01 <= abs(x) < 100 else f"{x:g}"

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]


def run(quick: bool = False) -> tuple[dict, str]:
    """Every measurement of the report: ``(results, markdown)``."""
    etas = (0.03, 0.3, 1.0) if quick else (0.01, 0.03, 0.1, 0.3, 1.0)
    pair_counts = (16,) if quick else (8, 16, 32)
    batch = 4 if quick else 16
    names = ("gated_deltanet", "yaad") if quick else tuple(MEMORIES)
    results: dict = {"step": [], "chunk": [], "prefix": [], "gain": [], "influence": [], "chunk_distance": []}
    md = [
        "# Recall of the Miras memories",
        "",
        "`python -m benchmarks.recall` (fp64, head size 32, unit keys, values of norm 1, constant gates; "
        f"{batch} sequences per cell). `acc`: share of keys whose read is nearest its own value; `cos`: cosine of "
        "the read's change with the change the write asked for. Gated DeltaNet and DeltaNet are exact (chunk 1); "
        "the MLP memories run chunked (64) with the layer's LN gain unless the row says `no gain` (the paper's LN).",
        "",
    ]
    rows = []
    for name in names:
        spec, forced = MEMORIES[name]
        for gain in (1.0, None) if spec.arch == "mlp" else (1.0,):
            for pairs in pair_counts:
                probe = Probe(pairs=pairs, gain=gain, batch=batch)
                cells = [recall(spec, eta, 0.999, probe, forced) for eta in etas]
                label = name if gain is not None or spec.arch != "mlp" else f"{name} (no gain)"
                results["step"].append({"memory": label, "pairs": pairs, "eta": list(etas), "scores": cells})
                rows.append([label, pairs] + [f"{c['acc']:.2f} / {c['cos']:.2f}" for c in cells])
    rows.append(["chance (1 / pairs)", " / ".join(f"{1 / n:.2f}" for n in pair_counts)] + [""] * len(etas))
    md += ["## Recall against the step size (alpha 0.999)", ""]
    md += _table(["memory", "pairs"] + [f"eta {e:g}" for e in etas], rows) + [""]

    best = {
        r["memory"]: max(zip(r["scores"], r["eta"], strict=True), key=lambda se: se[0]["acc"])[1]
        for r in results["step"]
        if r["pairs"] == 16
    }
    rows = []
    for name in names:
        spec, forced = MEMORIES[name]
        if forced:
            continue
        for chunk in (1, 16, 64):
            for prefix in (0, 40) if not quick else (40,):
                probe = Probe(chunk_size=chunk, prefix=prefix, batch=batch)
                cells = [(recall(spec, eta, 0.999, probe), eta) for eta in etas]
                cell, eta = max(cells, key=lambda ce: ce[0]["acc"])
                results["chunk"].append({"memory": name, "chunk": chunk, "prefix": prefix, "eta": eta, **cell})
                rows.append([name, chunk, prefix, f"{eta:g}", cell["acc"], cell["cos"]])
    md += [
        "## Recall against the chunk size (16 pairs, the best step of each cell; a prefix of 40 puts the pairs "
        "across a chunk end)",
        "",
    ]
    md += _table(["memory", "chunk", "prefix", "eta", "acc", "cos"], rows) + [""]

    rows = []
    for name in names:
        spec, forced = MEMORIES[name]
        for alpha in (0.9, 0.99, 0.999):
            for prefix in (0, 256) if quick else (0, 256, 1024):
                cell = recall(spec, best[name], alpha, Probe(prefix=prefix, batch=batch), forced)
                results["prefix"].append({"memory": name, "alpha": alpha, "prefix": prefix, **cell})
                rows.append([name, f"{alpha:g}", prefix, cell["acc"], cell["cos"]])
    md += ["## Recall after a long prefix of other writes (16 pairs, the best step at chunk 64 without prefix)", ""]
    md += _table(["memory", "alpha", "prefix", "acc", "cos"], rows) + [""]

    gains = (1.0, 2.0) if quick else (0.5, 1.0, 1.41, 2.0, 4.0)
    rows = []
    for name in names:
        spec, forced = MEMORIES[name]
        if spec.arch != "mlp" or forced or name != name.split()[0]:  # read modes agree without chunks
            continue
        for gain in gains:
            cells = [recall(spec, eta, 0.999, Probe(gain=gain, batch=batch), 1) for eta in etas]
            results["gain"].append({"memory": name, "gain": gain, "eta": list(etas), "scores": cells})
            rows.append([name, f"{gain:g}"] + [f"{c['acc']:.2f}" for c in cells])
    md += [
        "## Recall of the exact per-token recurrence against the LN gain (16 pairs, chunk 1)",
        "",
        "Without chunks a write is one gradient step at the current weights. `gain`: the norm of the LN branch at "
        "init (`MixerConfig.memory_ln_gain`; the read can only move on a sphere of that radius around the key, while "
        "`v - k` has norm ~1.4). The best cell of each MLP memory stays below the delta rule's 1.00: the gap is the "
        "one-step write of a 2-layer MLP with LN, not the chunk form.",
        "",
    ]
    md += _table(["memory", "gain"] + [f"eta {e:g}" for e in etas], rows) + [""]

    rows = []
    for name in names:
        spec, _ = MEMORIES[name]
        preset_eta = MIRAS_GATES.get(name.split()[0], {}).get("eta_init", 0.5)
        for gain, eta, alpha in ((1.0, preset_eta, 0.99), (1.0, 0.1, 0.99), (None, 0.001, 0.95)):
            if spec.arch != "mlp" and gain is None:
                continue
            probe = Probe(gain=gain)
            influence = write_influence(spec, eta, alpha, probe)
            distance = chunk_distance(spec, eta, alpha, probe) if spec.arch == "mlp" else 0.0
            entry = {"memory": name, "gain": gain, "eta": eta, "alpha": alpha}
            results["influence"].append({**entry, "influence": influence, "chunk_distance": distance})
            label = "paper LN" if gain is None else "gain 1"
            rows.append([name, label, f"{eta:g}", f"{alpha:g}", f"{influence:.3f}", distance])
    md += [
        "## Write influence and chunk form vs recurrence (256 correlated keys, chunk 64)",
        "",
        "`influence`: `||o - o_no_writes|| / ||o||` over tokens 128-255 (1 for a linear memory from zero). "
        "`chunk vs rec`: relative RMS distance of the chunk form from the per-token recurrence. Per memory: the "
        "preset's initial step (`miras.presets.MIRAS_GATES`; 0.5 for the delta rules, GDN's initial beta), a step of "
        "0.1, and the previous default of the MLP memories (the paper's LN, eta 0.001, alpha 0.95).",
        "",
    ]
    md += _table(["memory", "LN", "eta", "alpha", "influence", "chunk vs rec"], rows) + [""]
    return results, "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/miras/recall", help="path stem of the .md and .json written")
    parser.add_argument("--quick", action="store_true", help="reduced grid (seconds)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    results, md = run(args.quick)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(md)
    print(f"\n{time.perf_counter() - start:.0f} s -> {out}.md, {out}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
