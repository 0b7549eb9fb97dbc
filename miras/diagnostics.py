"""Gradient health of a model at initialisation: ``python -m miras.diagnostics moneta-340m --scale tiny``.

Prints the loss and the global gradient norm of one batch of random tokens (and the largest per-parameter norms),
for presets with ``--set`` overrides, at any scale. It is how the Miras gate defaults were chosen: an inner
learning rate that is too large makes the outer gradients explode across chunks.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from miras.config import override
from miras.models import LanguageModel
from miras.presets import preset
from miras.scales import SCALES, apply_scale


def grad_norms(name: str, scale: str = "tiny", overrides: tuple[str, ...] = (), batch: int = 4, seed: int = 0):
    """``(loss, global grad norm, {parameter: grad norm})`` of one random batch at initialisation."""
    torch.manual_seed(seed)
    config = override(apply_scale(preset(name), scale), overrides)
    model = LanguageModel(config.model)
    ids = torch.randint(0, config.model.vocab_size, (batch, config.data.seq_len))
    logits, _ = model(ids)
    loss = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
    loss.backward()
    norms = {n: p.grad.norm().item() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), sum(v * v for v in norms.values()) ** 0.5, norms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miras.diagnostics", description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+", help="preset names, e.g. yaad-340m transformer-340m")
    parser.add_argument("--scale", choices=SCALES, default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--top", type=int, default=3, help="largest per-parameter norms to show")
    args = parser.parse_args(argv)
    for name in args.presets:
        loss, total, norms = grad_norms(name, args.scale, tuple(args.set))
        top = ", ".join(f"{n} {v:.3g}" for n, v in sorted(norms.items(), key=lambda kv: -kv[1])[: args.top])
        print(f"{name}: loss {loss:.3f}  grad norm {total:.4g}  ({top})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
