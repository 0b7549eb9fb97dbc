"""``python -m miras export``: the Hugging Face folder loads through the Auto classes, gives our logits, and its
``generate()`` carries our states."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from miras.cli import main
from miras.config import DataConfig
from miras.hf import MirasCache, export
from miras.layers import implemented
from miras.presets import preset
from miras.scales import apply_scale
from tests.miras.test_evaluation import GENERATION_MIXERS, VOCAB, save_checkpoint, tiny_model


@pytest.fixture
def exported(tiny_corpus, tmp_path):
    def make(name: str):
        model = tiny_model(name).float()
        config = apply_scale(preset(f"{name}-340m"), "smoke")
        config = dataclasses.replace(
            config,
            model=model.config,
            data=DataConfig(tokenizer=str(tiny_corpus / "tokenizer.json"), seq_len=48),
        )
        save_checkpoint(tmp_path / name / "run", model, config)
        return model, export(tmp_path / name / "run", tmp_path / name / "hf")

    return make


@pytest.mark.parametrize("name", [m for m in GENERATION_MIXERS if implemented(m)])
def test_the_exported_model_gives_our_logits(exported, name):
    model, folder = exported(name)
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.randint(1, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["transformer", "gated_deltanet", "moneta"])
def test_generate_carries_our_states_and_equals_rereading(exported, name):
    model, folder = exported(name)
    hf = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("The memory", return_tensors="pt")["input_ids"]
    lengths = []
    hf.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    out = hf.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1] :].tolist()
    want = ids[0].tolist()
    with torch.no_grad():
        for _ in range(6):
            want.append(int(model(torch.tensor([want]))[0][0, -1].argmax()))
    assert out == want[ids.shape[1] :][: len(out)] and len(out) >= 1
    assert lengths[0] == ids.shape[1] and set(lengths[1:]) <= {1}


def test_export_errors_are_one_line(exported, tmp_path, capsys):
    _, folder = exported("gla")
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "gla" / "run"), str(folder)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (folder / "modeling_miras.py").is_file() and "gla" in (folder / "README.md").read_text()


def test_the_cache_counts_what_it_has_read():
    assert MirasCache([], 5).get_seq_length() == 5
