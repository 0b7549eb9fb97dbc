"""lm-evaluation-harness adapter: a :class:`LanguageModel` and its tokenizer as an ``lm_eval`` model.

Requests are scored the way lm-eval's Hugging Face model scores them (contexts truncated from the left, trailing
context spaces moved into the continuation, empty contexts conditioned on EOS), so numbers compare with the
papers' harness runs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from miras.checkpoint import load_checkpoint, tokenizer_spec
from miras.generation import decode
from miras.models import LanguageModel

DEFAULT_MAX_GEN_TOKS = 256
"""Generation budget when a request names none (lm-eval's default)."""


@register_model("miras")
class MirasLM(TemplateLM):
    """A :class:`LanguageModel` behind lm-eval's three request types.

    Args:
        model: ``model(input_ids[B, T], states=None) -> (logits[B, T, V], states)``.
        tokenizer: a ``tokenizers.Tokenizer`` (``data.tokenizer.load_tokenizer``).
        max_length: most tokens the model sees at once; longer contexts lose their left end.
        batch_size: sequences per forward pass.
        device: where the model runs; it is moved there.
        eos_id: end-of-text id (default: the tokenizer's ``<|endoftext|>``, ``</s>``, ...).

    ``simple_evaluate(model="miras", model_args="checkpoint=<run folder or last.ckpt>")`` builds one with
    :meth:`from_checkpoint`. The base class ``TemplateLM`` (an ``lm_eval`` ``LM``) splits (context, continuation)
    strings into tokens exactly as lm-eval's Hugging Face model does.
    """

    def __init__(
        self,
        model: LanguageModel,
        tokenizer,
        max_length: int,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        eos_id: int | None = None,
    ) -> None:
        from data.tokenizer import eos_id as find_eos

        super().__init__()
        if max_length < 1 or int(batch_size) < 1:
            raise ValueError(f"max_length={max_length} and batch_size={batch_size} must be positive")
        self._device = torch.device(device)
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self._eos = find_eos(tokenizer) if eos_id is None else int(eos_id)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
    ) -> MirasLM:
        """The model of a training run: ``path`` is its run folder (its newest checkpoint that loads) or a checkpoint
        file (:func:`miras.checkpoint.load_checkpoint`).

        The config saved in the checkpoint rebuilds the model and names the tokenizer (it is kept as
        ``run_config``, the file as ``checkpoint``); ``max_length`` defaults to the training context
        ``data.seq_len``.
        """
        from data.tokenizer import load_tokenizer

        model, config, file = load_checkpoint(path)
        lm = cls(
            model,
            load_tokenizer(tokenizer_spec(config)),
            max_length=max_length or config.data.seq_len,
            batch_size=batch_size,
            device=device,
        )
        lm.run_config, lm.checkpoint = config, file
        return lm

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> MirasLM:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> MirasLM:
        args = {**arg_dict, **{k: v for k, v in (additional_config or {}).items() if v is not None}}
        args.pop("max_batch_size", None)
        if "checkpoint" not in args:
            raise ValueError("model_args of the 'miras' model need checkpoint=<run folder or last.ckpt>")
        return cls.from_checkpoint(args.pop("checkpoint"), **args)

    @property
    def eot_token_id(self) -> int:
        return self._eos

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # our models were trained on EOS-separated documents without BOS, so nothing is ever prepended
        return self.tokenizer.encode(string, add_special_tokens=False).ids

    def tok_decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``[(key, context_ids, continuation_ids)] -> [(sum log p(continuation | context), is_greedy)]``.

        Longest first, ``batch_size`` sequences right-padded per forward (causal: padding never reaches the scored
        positions); each input is the last ``max_length`` tokens of ``context + continuation`` minus the last one.
        """
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="loglikelihood", disable=disable_tqdm):
            inputs, targets = [], []
            for i in batch:
                _, context, continuation = requests[i]
                if len(continuation) > self.max_length:
                    raise ValueError(
                        f"a continuation of {len(continuation)} tokens does not fit max_length={self.max_length}"
                    )
                inputs.append((context + continuation)[-(self.max_length + 1) :][:-1])
                targets.append(continuation)
            logits = self._forward_padded(inputs)
            for row, i in enumerate(batch):
                n, target = len(inputs[row]), torch.tensor(targets[row], dtype=torch.long, device=self.device)
                # half-precision logits are normalised in fp32; fp32 and fp64 ones as they are
                dtype = torch.promote_types(logits.dtype, torch.float32)
                logprobs = logits[row, n - len(target) : n].log_softmax(-1, dtype=dtype)
                score = float(logprobs.gather(-1, target[:, None]).sum())
                greedy = bool((logprobs.argmax(-1) == target).all())
                results[i] = (score, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def _forward_padded(self, inputs: list[list[int]]) -> torch.Tensor:
        """Logits ``[B, T_max, V]`` of right-padded token lists."""
        ids = torch.full((len(inputs), max(map(len, inputs))), self._eos, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        logits, _ = self.model(ids.to(self.device))
        return logits

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts (lm-eval's rolling windows): the tokens are predicted in disjoint blocks
        of ``max_length``, each from one window of ``max_length`` inputs ending at the block's end (the first
        window starts with EOS; the last, shorter block sees a full window of the tokens before it)."""
        windows, owner = [], []
        for i, request in enumerate(requests):
            text = request.args[0]
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self._eos,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (score, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[i] += score
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations: stop at EOS, at any ``until`` string (cut off) or after ``max_gen_toks`` tokens.

        Contexts keep their last ``max_length - max_gen_toks`` tokens. The context is read once and then one token
        per step goes in with the states (KV caches, recurrent memories); requests whose contexts have the same
        number of tokens share a batch.
        """
        groups: dict[tuple[int, int], list[tuple[int, list[int], list[str]]]] = defaultdict(list)
        for i, request in enumerate(requests):
            context, gen_kwargs = request.args
            until, max_new = stop_rule(gen_kwargs)
            if max_new >= self.max_length:
                raise ValueError(f"max_gen_toks={max_new} leaves no room for a context in max_length={self.max_length}")
            ids = self.tok_encode(context)[-(self.max_length - max_new) :] or [self._eos]
            groups[(len(ids), max_new)].append((i, ids, until))
        results: list[str | None] = [None] * len(requests)
        batches = [
            (max_new, members[j : j + self.batch_size])
            for (_, max_new), members in groups.items()
            for j in range(0, len(members), self.batch_size)
        ]
        for max_new, batch in tqdm(batches, desc="generate_until", disable=disable_tqdm):
            ids = torch.tensor([ids for _, ids, _ in batch], device=self.device)
            generated = self.greedy(ids, max_new, [until for _, _, until in batch])
            for (i, _, until), tokens in zip(batch, generated, strict=True):
                results[i] = cut(self.tok_decode(tokens), until)
                self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
        return results

    def greedy(self, ids: torch.Tensor, max_new: int, until: list[list[str]]) -> list[list[int]]:
        """Greedy tokens after ``ids[B, T]``, one list per row, each ending at EOS, at the token that completes
        one of the row's ``until`` strings, or after ``max_new`` tokens (``miras.generation.decode``)."""
        generated: list[list[int]] = [[] for _ in range(ids.shape[0])]
        done = [False] * ids.shape[0]
        steps = decode(self.model, ids, max_new)
        for next_ids in steps:
            for row, token in enumerate(next_ids.tolist()):
                if not done[row]:
                    generated[row].append(token)
                    text = self.tok_decode(generated[row])
                    done[row] = token == self._eos or any(s and s in text for s in until[row])
            if all(done):
                steps.close()
                break
        return generated


def stop_rule(gen_kwargs: dict) -> tuple[list[str], int]:
    """``(until strings, max new tokens)`` of a request's generation arguments (EOS stops by its id, as decoding
    drops special tokens)."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return until, int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))


def cut(text: str, until: list[str]) -> str:
    """``text`` up to the first of the ``until`` strings."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
