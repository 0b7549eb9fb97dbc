"""Hugging Face view of a trained run: ``AutoModelForCausalLM``, ``generate()`` and an exported model folder.

``python -m miras export RUN_DIR OUT_DIR`` writes ``config.json``, ``model.safetensors``, the tokenizer files, a
model card and ``modeling_miras.py``. The folder loads with ``AutoModelForCausalLM.from_pretrained(OUT_DIR,
trust_remote_code=True)``: the carried ``modeling_miras.py`` is one import of this module, so the model code is
the installed package's (this repository), never a copy that could drift from it; importing :mod:`miras.hf` also
registers the classes with the Auto classes, after which ``trust_remote_code`` is not needed. ``generate()``
carries our own states (KV caches, recurrent memories) in :class:`MirasCache`, so each new token costs one step.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from miras.config import ModelConfig, from_dict, to_dict
from miras.models import LanguageModel

MODEL_TYPE = "miras_lm"
CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
"""What the installed transformers calls the cache in model outputs and inputs (``cache`` from 5.x on)."""
REMOTE_CODE = '''"""The Miras language model of this folder, from the installed ``miras`` package (``miras.hf``)."""

from miras.hf import MirasConfig, MirasForCausalLM

__all__ = ["MirasConfig", "MirasForCausalLM"]
'''


class MirasConfig(PretrainedConfig):
    """A :class:`miras.config.ModelConfig` as a transformers config (``miras_model`` holds it as a dict)."""

    model_type = MODEL_TYPE

    def __init__(self, miras_model: dict | None = None, **kwargs) -> None:
        self.miras_model = miras_model or {}
        kwargs.setdefault("vocab_size", self.miras_model.get("vocab_size"))
        kwargs.setdefault("tie_word_embeddings", bool(self.miras_model.get("tie_embeddings", False)))
        super().__init__(**kwargs)


class MirasCache:
    """The per-block states of :class:`LanguageModel` and how many tokens they have read."""

    def __init__(self, states: list, seen: int) -> None:
        self.states, self.seen = states, seen

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen


class MirasForCausalLM(PreTrainedModel, GenerationMixin):
    """:class:`LanguageModel` behind transformers' causal-LM interface (logits, loss, ``generate()``)."""

    config_class = MirasConfig
    base_model_prefix = "miras"
    main_input_name = "input_ids"

    def __init__(self, config: MirasConfig) -> None:
        super().__init__(config)
        self.model = LanguageModel(from_dict(ModelConfig, config.miras_model))
        if self.model.config.tie_embeddings:
            tied = {"model.lm_head.weight": "model.embed.weight"}
            self._tied_weights_keys = tied if int(transformers.__version__.split(".")[0]) >= 5 else list(tied)
        self.post_init()

    _supports_cache_class = False

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No transformers cache: generate() carries the :class:`MirasCache` that forward returns."""
        return False

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, then the buffers that are not saved (decay rates, rotary frequencies) recomputed:
        transformers builds the model on the meta device, where they would stay unset."""
        model = super().from_pretrained(*args, **kwargs)
        fresh = dict(LanguageModel(from_dict(ModelConfig, model.config.miras_model)).named_buffers())
        saved = model.model.state_dict().keys()
        for name, buffer in model.model.named_buffers():
            if name in fresh and name not in saved:
                buffer.data = fresh[name].to(
                    device=buffer.device, dtype=buffer.dtype if buffer.is_floating_point() else None
                )
        return model

    def _init_weights(self, module) -> None:
        """Weights come from the checkpoint; :class:`LanguageModel` initialises itself."""

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        past_key_values: MirasCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits ``[B, T, V]`` of ``input_ids``, continuing from the cache when it is a :class:`MirasCache` (any
        other cache object is ignored: the ids then hold the whole text). Padding is not supported."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "attention_mask has padding; the Miras models read unpadded rows (generate one prompt at a time)"
            )
        cache = kwargs.pop(CACHE, past_key_values)
        cache = cache if isinstance(cache, MirasCache) else None
        logits, states = self.model(input_ids, states=None if cache is None else cache.states)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        seen = (0 if cache is None else cache.seen) + input_ids.shape[1]
        carried = MirasCache(states, seen) if use_cache is not False else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE: carried})

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs) -> dict:
        """Only the tokens the cache has not read yet; the whole text when there is no :class:`MirasCache`."""
        cache = kwargs.get(CACHE, past_key_values)
        if isinstance(cache, MirasCache):
            input_ids = input_ids[:, cache.seen :]
        else:
            cache = None
        return {"input_ids": input_ids, CACHE: cache, "use_cache": True, "attention_mask": attention_mask}


AutoConfig.register(MODEL_TYPE, MirasConfig, exist_ok=True)
AutoModelForCausalLM.register(MirasConfig, MirasForCausalLM, exist_ok=True)


def export(run: str | Path, out: str | Path) -> Path:
    """Write the Hugging Face folder of a run's newest checkpoint that loads (or of one checkpoint file) to ``out``
    (which must be absent or empty)."""
    from transformers import PreTrainedTokenizerFast

    from data.tokenizer import eos_id, load_tokenizer
    from miras.checkpoint import load_checkpoint, tokenizer_spec

    model, config, file = load_checkpoint(run)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new folder for the export")
    tokenizer = load_tokenizer(tokenizer_spec(config))
    eos = eos_id(tokenizer)
    hf_config = MirasConfig(
        miras_model=to_dict(config.model),
        eos_token_id=eos,
        auto_map={
            "AutoConfig": "modeling_miras.MirasConfig",
            "AutoModelForCausalLM": "modeling_miras.MirasForCausalLM",
        },
    )
    hf_model = MirasForCausalLM(hf_config)
    hf_model.model.load_state_dict(model.state_dict())
    hf_model.save_pretrained(out, safe_serialization=True)
    (out / "modeling_miras.py").write_text(REMOTE_CODE)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=tokenizer.id_to_token(eos))
    fast.save_pretrained(out)
    (out / "README.md").write_text(model_card(Path(file), config))
    return out


def model_card(checkpoint: Path, config) -> str:
    """What the folder holds: the run's config, data and metrics (from its ``summary.json`` when it has one)."""
    from miras.checkpoint import run_of

    run = run_of(checkpoint)
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    metrics = summary.get("metrics", {})
    lines = [
        "---",
        "library_name: transformers",
        "tags: [miras, test-time-memorization]",
        "---",
        "",
        f"# {summary.get('run', run.name)} ({summary.get('table', 'miras')}, scale {summary.get('scale', '?')})",
        "",
        "A language model trained with this repository (`python -m miras train`), exported with "
        "`python -m miras export`. Load it with `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`"
        " (the `miras` package must be installed: `modeling_miras.py` imports it).",
        "",
        f"- mixer: `{config.model.mixer.name}`, d_model {config.model.d_model}, {config.model.n_layer} blocks, "
        f"vocabulary {config.model.vocab_size}",
        f"- data: `{config.data.dataset}` {config.data.name or ''} {config.data.path or ''}".rstrip()
        + f", context {config.data.seq_len}",
        f"- training: {summary.get('steps', '?')} steps, {summary.get('tokens', '?')} tokens, config hash "
        f"`{summary.get('config_hash', '?')}`, git `{summary.get('git', {}).get('sha', '?')}`",
        "",
        "## Metrics",
        "",
        *_eval_lines(summary.get("eval", {})),
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))),
        "",
        "## Config",
        "",
        "```json",
        json.dumps(to_dict(config), indent=1, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def _eval_lines(records: dict) -> list[str]:
    """Where the eval metrics come from and on how many examples (fewer than 100: a pipeline check only)."""
    lines = []
    if "lm_eval" in records:
        r = records["lm_eval"]
        lines.append(f"- lm-eval {r.get('lm_eval', '?')} zero-shot on {r.get('data', '?')}; examples per task: "
                     f"{', '.join(f'{t} {n}' for t, n in (r.get('n_samples') or {}).items()) or '?'}")  # fmt: skip
    if "niah" in records:
        r = records["niah"]
        lines.append(f"- S-NIAH from the {r.get('data', '?')}, {r.get('samples', '?')} samples per task and length")
    if lines:
        lines += ["- scores on fewer than 100 examples (the offline fixtures) only check the pipeline", ""]
    return lines
