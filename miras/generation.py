"""Text from a trained run: one sampler, and decoding with the mixers' states carried.

``python -m miras generate RUN_DIR --prompt TEXT`` streams a continuation to the terminal. The prompt is read
once; then every new token goes in alone with the states of the previous step (KV caches for attention,
recurrent memories for the linear and Miras mixers, whose step is O(1) in the length), as the lm-eval adapter's
greedy path does through the same :func:`decode`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from miras.checkpoint import load_checkpoint, tokenizer_spec
from miras.models import LanguageModel


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn from the logits: greedy at ``temperature=0``, else softmax(logits / T) cut to
    the ``top_k`` most likely tokens (0: all) and to the smallest set holding ``top_p`` of the mass."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"--temperature={self.temperature} is invalid; allowed values: a number >= 0")
        if int(self.top_k) != self.top_k or self.top_k < 0:
            raise ValueError(f"--top-k={self.top_k} is invalid; allowed values: an integer >= 0 (0 keeps every token)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p={self.top_p} is invalid; allowed values: a number in (0, 1]")

    def next_token(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``ids[B]`` from ``logits[B, V]``."""
        if self.temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / self.temperature
        if self.top_k:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1:
            sorted_logits, order = logits.sort(-1, descending=True)
            mass = sorted_logits.softmax(-1).cumsum(-1)
            # drop a token when the tokens ranked above it already hold top_p of the mass; the first always stays
            drop = (mass - sorted_logits.softmax(-1)) >= self.top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


GREEDY = Sampling()


@torch.inference_mode()
def decode(
    model: LanguageModel,
    ids: torch.Tensor,
    max_new: int,
    sampling: Sampling = GREEDY,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``max_new`` next tokens ``[B]`` after the prompt ``ids[B, T]``, one step at a time.

    The prompt goes through the model once; each step then feeds only the token just drawn, with the states the
    previous step returned (``LanguageModel.forward(..., states=...)``). Stop early by closing the iterator."""
    if max_new < 1:
        raise ValueError(f"--max-new-tokens={max_new} is invalid; allowed values: an integer >= 1")
    logits, states = model(ids)
    for step in range(max_new):
        token = sampling.next_token(logits[:, -1], generator)
        yield token
        if step < max_new - 1:
            logits, states = model(token[:, None], states=states)


def prompt_ids(tokenizer, text: str, context: int, max_new: int, eos: int) -> list[int]:
    """The prompt's tokens, keeping its last ``context - max_new`` (as the lm-eval adapter keeps a context's
    end); EOS alone for an empty prompt. Nothing is prepended: the models trained without BOS."""
    if max_new >= context:
        raise ValueError(f"--max-new-tokens={max_new} leaves no room for a prompt in the context of {context} tokens")
    return tokenizer.encode(text, add_special_tokens=False).ids[-(context - max_new) :] or [eos]


def generate_cli(
    run: Path,
    prompt: str,
    max_new: int,
    sampling: Sampling,
    seed: int,
    device: str,
    out=None,
) -> dict:
    """Stream the continuation of ``prompt`` to ``out`` (stdout); return the token counts and rates it prints last."""
    out = out or sys.stdout
    from data.tokenizer import eos_id, load_tokenizer

    model, config, _ = load_checkpoint(run)
    model = model.to(device)
    tokenizer = load_tokenizer(tokenizer_spec(config))
    eos = eos_id(tokenizer)
    ids = prompt_ids(tokenizer, prompt, config.data.seq_len, max_new, eos)
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens: list[int] = []
    shown = ""
    start = time.perf_counter()
    first = None
    for token in decode(model, torch.tensor([ids], device=device), max_new, sampling, generator):
        if first is None:
            first = time.perf_counter()
        token_id = int(token[0])
        if token_id == eos:
            break
        tokens.append(token_id)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.write(text[len(shown) :])
            out.flush()
            shown = text
    end = time.perf_counter()
    prefill = (first or end) - start
    stats = {
        "prompt_tokens": len(ids),
        "generated_tokens": len(tokens),
        "prompt_tokens_per_s": len(ids) / prefill if prefill > 0 else float("inf"),
        "generation_tokens_per_s": max(len(tokens) - 1, 0) / (end - first) if first and end > first else 0.0,
    }
    out.write(
        f"\n[{stats['prompt_tokens']} prompt tokens at {stats['prompt_tokens_per_s']:.1f} tokens/s, "
        f"{stats['generated_tokens']} generated at {stats['generation_tokens_per_s']:.1f} tokens/s on {device}]\n"
    )
    return stats
