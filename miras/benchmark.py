"""Tokens per second of one training step (forward, backward, AdamW) of every mixer's model, side by side.

``python -m miras.benchmark --size 340m --seq-len 2048 --batch 4 --out reports/benchmarks/mixers_h100.md``
builds each ``<mixer>-<size>`` preset (optionally fewer blocks with ``--layers``), times ``--steps`` steps after
``--warmup`` on the current device and writes a Markdown table with the device, library versions and git sha.
Ratios between rows of one file are the claim; absolute CPU numbers are noise.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from miras.config import KNOWN_MIXERS, override
from miras.layers import implemented
from miras.lit.callbacks import git_state
from miras.models import LanguageModel, count_parameters
from miras.presets import preset


def step_time(name: str, args: argparse.Namespace, device: torch.device) -> tuple[float, int]:
    """Median seconds of one training step and the model's parameter count."""
    extra = [f"model.n_layer={args.layers}"] if args.layers else []
    config = override(preset(f"{name}-{args.size}"), [f"model.mixer.backend={args.backend}", *extra]).model
    model = LanguageModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq_len + 1), device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            logits, _ = model(ids[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], count_parameters(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixers", nargs="*", default=[m for m in KNOWN_MIXERS if implemented(m)])
    p.add_argument("--size", default="340m")
    p.add_argument("--layers", type=int, default=0, help="blocks per model (0: the preset's)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "fla"))
    p.add_argument("--out", type=Path, help="Markdown file to write (default: print only)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokens = args.batch * args.seq_len
    rows = []
    for name in args.mixers:
        try:
            seconds, params = step_time(name, args, device)
            row = f"| {name} | {params / 1e6:.1f}M | {seconds * 1e3:.1f} | {tokens / seconds:,.0f} |"
        except torch.OutOfMemoryError:
            row = f"| {name} | - | out of memory | - |"
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(row, flush=True)
        rows.append(row)

    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for module in ("triton", "fla"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "absent"
    git = git_state()
    text = "\n".join(
        [
            f"# Training-step throughput, {args.size} presets",
            "",
            f"`python -m miras.benchmark {' '.join(argv if argv is not None else sys.argv[1:])}`",
            "",
            f"Device: {name}. Batch {args.batch} x {args.seq_len} tokens"
            f"{', ' + str(args.layers) + ' blocks' if args.layers else ''}, backend {args.backend}, "
            f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}; median of {args.steps} steps after "
            f"{args.warmup} warm-up steps. Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}. "
            f"Git: {git['sha'][:10]}{' (dirty)' if git['dirty'] else ''}.",
            "",
            "| mixer | params | ms / step | tokens / s |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
