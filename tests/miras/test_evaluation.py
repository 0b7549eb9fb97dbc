"""lm-eval adapter: its scores are the model's own, cached decoding equals re-reading the text, and the Table 2
tasks run offline on the fixtures in their Hub schemas."""

import dataclasses
import math
import re
from pathlib import Path

import datasets.config
import lm_eval.api.registry
import pytest
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from tokenizers import Tokenizer

from miras.config import KNOWN_MIXERS, DataConfig, MixerConfig, ModelConfig, RunConfig
from miras.evaluation import (
    FIXTURES,
    TABLE2_TASKS,
    MirasLM,
    evaluate,
    flatten_metrics,
    official_task_config,
    offline_task_configs,
)
from miras.experiment import load_experiment
from miras.lit import LanguageModelModule
from miras.models import LanguageModel
from miras.presets import preset
from miras.scales import apply_scale

REPO = Path(__file__).resolve().parents[2]
VOCAB = 300
GENERATION_MIXERS = KNOWN_MIXERS  # every mixer and hybrid pattern


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


@pytest.fixture(scope="module")
def tokenizer(tiny_corpus):
    return Tokenizer.from_file(str(tiny_corpus / "tokenizer.json"))


def tiny_model(name: str = "transformer") -> LanguageModel:
    """The smoke-scale model of ``name`` in fp64, with 4-token chunks so that short texts cross chunk ends."""
    config = apply_scale(preset(f"{name}-340m"), "smoke").model
    mixer = dataclasses.replace(config.mixer, chunk_size=4)
    # with tied, small weights an untrained model's argmax is its input token: greedy text would ignore the states
    config = dataclasses.replace(config, vocab_size=VOCAB, tie_embeddings=False, init_std=0.3, mixer=mixer)
    return LanguageModel(config).double().eval()


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def request(kind: str, *args) -> Instance:
    return Instance(kind, {}, args, 0)


@torch.no_grad()
def direct_score(model, tokens: list[int], n_target: int) -> tuple[float, bool]:
    """Sum of log p of the last ``n_target`` tokens given the ones before, from one unpadded forward."""
    logits, _ = model(torch.tensor([tokens[:-1]]))
    logprobs = logits[0, -n_target:].log_softmax(-1)
    target = torch.tensor(tokens[-n_target:])
    return float(logprobs.gather(-1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())


def test_loglikelihood_is_the_log_softmax_sum_of_a_direct_forward(tokenizer):
    model = tiny_model()
    lm = MirasLM(model, tokenizer, max_length=16, batch_size=2)
    eos = lm.eot_token_id
    pairs = [
        ("The river", " flows to the sea."),
        ("A small stone bridge over the quiet water of the green garden and the old river", " was built."),
        ("Winter light", " reads"),
        ("", "Memory learns."),
    ]
    got = lm.loglikelihood([request("loglikelihood", c, x) for c, x in pairs], disable_tqdm=True)
    for (context, continuation), (score, greedy) in zip(pairs, got, strict=True):
        context_ids = encode(tokenizer, context) if context else [eos]
        whole = encode(tokenizer, context + continuation) if context else [eos, *encode(tokenizer, continuation)]
        n_target = len(whole) - len(context_ids)
        want = direct_score(model, whole[-(lm.max_length + 1) :], n_target)
        assert score == pytest.approx(want[0], abs=1e-5) and greedy == want[1]
    assert len(encode(tokenizer, pairs[1][0])) > lm.max_length  # the second context was cut on the left

    context = encode(tokenizer, "The memory retains")
    best = int(model(torch.tensor([context]))[0][0, -1].argmax())
    (_, greedy), (_, not_greedy) = lm._loglikelihood_tokens(
        [(None, context, [best]), (None, context, [(best + 1) % VOCAB])], disable_tqdm=True
    )
    assert greedy and not not_greedy


SHORT_TEXT = "Small light."
LONG_TEXT = " ".join(["The quick river reads the old stone."] * 6)


@pytest.mark.parametrize("text", [SHORT_TEXT, LONG_TEXT])
def test_rolling_loglikelihood_is_minus_the_token_cross_entropy(tokenizer, text):
    model = tiny_model()
    lm = MirasLM(model, tokenizer, max_length=16, batch_size=3)
    tokens = encode(tokenizer, text)
    inputs, L = [lm.eot_token_id, *tokens[:-1]], lm.max_length
    assert len(tokens) < L if text == SHORT_TEXT else len(tokens) > 2 * L and len(tokens) % L  # ends part-way
    # tokens are predicted in disjoint blocks of max_length, each from max_length inputs ending at the block's end
    # (the first one after EOS; the last one, shorter, after a full max_length of context)
    want = 0.0
    with torch.no_grad():
        for start in range(0, len(tokens), L):
            end = min(start + L, len(tokens))
            logits, _ = model(torch.tensor([inputs[max(0, end - L) : end]]))
            targets = torch.tensor(tokens[start:end])
            want -= float(F.cross_entropy(logits[0, -len(targets) :], targets, reduction="sum"))
    (got,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)], disable_tqdm=True)
    assert got == pytest.approx(want, abs=1e-5)


@torch.no_grad()
def reread_greedy(model, ids: list[int], max_new: int, eos: int) -> list[int]:
    """Greedy decoding that runs the whole text through the model for every new token."""
    out = []
    for _ in range(max_new):
        token = int(model(torch.tensor([ids + out]))[0][0, -1].argmax())
        out.append(token)
        if token == eos:
            break
    return out


@pytest.mark.parametrize("name", GENERATION_MIXERS)
def test_generation_with_states_equals_rereading_the_text(tokenizer, name):
    model = tiny_model(name)
    lm = MirasLM(model, tokenizer, max_length=32, batch_size=2)
    eos = lm.eot_token_id
    ids = torch.randint(1, VOCAB, (2, 7))
    assert lm.greedy(ids, 10, [[], []]) == [reread_greedy(model, row, 10, eos) for row in ids.tolist()]

    # a stop string the model does produce, so that one request ends early
    text = tokenizer.decode(reread_greedy(model, encode(tokenizer, "The memory"), 9, eos))
    stop = next((ch for ch in text[2:] if ch.isascii() and ch.isalnum()), "e")
    contexts = ["The memory", "The memory", "A slow green river model", ""]
    kwargs = [
        {"until": [stop], "max_gen_toks": 9},
        {"until": "\n\n", "max_gen_toks": 9},
        {"max_gen_toks": 12},
        {"max_gen_toks": 5},
    ]
    outputs = lm.generate_until(
        [request("generate_until", c, k) for c, k in zip(contexts, kwargs, strict=True)], disable_tqdm=True
    )
    for context, kw, output in zip(contexts, kwargs, outputs, strict=True):
        tokens = reread_greedy(model, encode(tokenizer, context) or [eos], kw["max_gen_toks"], eos)
        want = tokenizer.decode(tokens)
        for until in [kw["until"]] if isinstance(kw.get("until"), str) else kw.get("until", []):
            want = want.split(until)[0]
        assert output == want
    if stop in text:  # (a model may end the text at once with EOS)
        assert len(outputs[0]) < len(outputs[1])


def test_table2_tasks_run_offline_on_the_fixtures(tokenizer):
    model = LanguageModel(ModelConfig(vocab_size=VOCAB, d_model=32, n_layer=2, mixer=MixerConfig(n_head=2)))
    lm = MirasLM(model, tokenizer, max_length=64, batch_size=8)
    results = evaluate(lm, TABLE2_TASKS, data_dir=FIXTURES, limit=2, bootstrap_iters=0)
    metrics = flatten_metrics(results)
    table = load_experiment(REPO / "experiments" / "miras" / "table2.py")
    columns = [c.key for c in table.columns if c.key.startswith("eval/") and c.key != "eval/avg/acc"]
    assert len(columns) == 10 and {c.split("/")[1] for c in columns} == set(TABLE2_TASKS)
    assert "eval/avg/acc" in {c.key for c in table.columns}  # written by average_accuracy after the harness
    assert set(columns) <= set(metrics)
    assert all(math.isfinite(v) and not k.endswith("_stderr") for k, v in metrics.items())
    assert all(0 <= metrics[k] <= 1 for k in columns if k.endswith(("/acc", "/acc_norm")))
    assert metrics["eval/wikitext/word_perplexity"] > 1


def test_offline_configs_keep_the_official_prompts_and_metrics():
    (offline,) = offline_task_configs(["arc_challenge"], FIXTURES)
    official = official_task_config("arc_challenge")
    changed = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split", "fewshot_split"}
    assert {k: v for k, v in offline.items() if k not in changed} == {
        k: v for k, v in official.items() if k not in changed
    }
    assert offline["test_split"] == "test" and offline["validation_split"] is None
    assert offline["dataset_kwargs"]["data_files"]["test"].endswith("arc_challenge.jsonl")
    assert official["dataset_name"] == "ARC-Challenge"  # the include: of arc_easy.yaml was resolved
    (piqa,) = offline_task_configs(["piqa"], FIXTURES)
    assert piqa["validation_split"] == "validation" and piqa["test_split"] is None


def test_unknown_task_and_missing_data_name_them(tmp_path):
    with pytest.raises(ValueError, match="task 'wikitext2' is unknown; allowed values: wikitext, lambada_openai"):
        offline_task_configs(["wikitext2"], FIXTURES)
    with pytest.raises(
        ValueError, match=re.escape(f"task 'piqa' has no local data; expected {tmp_path / 'piqa.jsonl'}")
    ):
        offline_task_configs(["piqa"], tmp_path)


def save_checkpoint(folder: Path, model: LanguageModel, config: RunConfig) -> Path:
    """A checkpoint with what Lightning saves of :class:`LanguageModelModule` (hyperparameters, weights)."""
    module = LanguageModelModule(model, config)
    path = folder / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    return path


def test_from_checkpoint_rebuilds_the_model_and_names_a_bad_file(tiny_corpus, tmp_path):
    model_config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layer=2, mixer=MixerConfig(name="gla", n_head=2))
    data = DataConfig(tokenizer=str(tiny_corpus / "tokenizer.json"), seq_len=48)
    model = LanguageModel(model_config).eval()
    save_checkpoint(tmp_path / "run", model, RunConfig(model=model_config, data=data))

    assert lm_eval.api.registry.get_model("miras") is MirasLM
    lm = MirasLM.create_from_arg_string(f"checkpoint={tmp_path / 'run'},batch_size=2", {"max_batch_size": None})
    assert lm.max_length == 48 and lm.batch_size == 2
    ids = torch.randint(0, VOCAB, (1, 9))
    torch.testing.assert_close(lm.model(ids)[0], model(ids)[0])

    wider = dataclasses.replace(model_config, d_model=64)
    bad = save_checkpoint(tmp_path / "bad", model, RunConfig(model=wider, data=data))
    with pytest.raises(ValueError, match="weights do not match") as err:
        MirasLM.from_checkpoint(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
