"""``python -m miras generate``: one sampler, states carried, the adapter's greedy path on the same decoder."""

import io

import pytest
import torch

from miras.cli import main
from miras.config import DataConfig, MixerConfig, ModelConfig, RunConfig
from miras.generation import Sampling, decode, generate_cli, prompt_ids
from miras.models import LanguageModel
from tests.miras.test_evaluation import VOCAB, save_checkpoint, tiny_model


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "--temperature=-1.0 is invalid"),
        ({"top_k": -2}, "--top-k=-2 is invalid"),
        ({"top_p": 0.0}, "--top-p=0.0 is invalid"),
        ({"top_p": 1.5}, "--top-p=1.5 is invalid"),
    ],
)
def test_invalid_sampling_names_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sampling(**kwargs)


def test_top_k_and_top_p_cut_the_distribution():
    logits = torch.tensor([[0.0, 3.0, 2.0, -1.0]]).repeat(500, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(Sampling(1.0, top_k=2).next_token(logits, gen).tolist()) == {1, 2}
    # p(1) = 0.67, p(2) = 0.24: top_p 0.5 keeps the first token only, 0.8 the first two
    assert set(Sampling(1.0, top_p=0.5).next_token(logits, gen).tolist()) == {1}
    assert set(Sampling(1.0, top_p=0.8).next_token(logits, gen).tolist()) == {1, 2}
    assert Sampling().next_token(logits[:1]).tolist() == [1]
    assert len(set(Sampling(1.0).next_token(logits, gen).tolist())) == 4


@pytest.mark.parametrize("name", ["transformer", "gated_deltanet", "moneta", "memora", "samba"])
def test_sampling_with_states_equals_rereading_the_text(name):
    model = tiny_model(name)
    ids = torch.randint(1, VOCAB, (1, 7))
    sampling = Sampling(temperature=1.0, top_k=50)
    cached = [int(t) for t in decode(model, ids, 9, sampling, torch.Generator().manual_seed(3))]
    gen, reread = torch.Generator().manual_seed(3), []
    with torch.no_grad():
        for _ in range(9):
            logits = model(torch.cat([ids, torch.tensor([reread], dtype=ids.dtype)], 1))[0][:, -1]
            reread.append(int(sampling.next_token(logits, gen)))
    assert cached == reread


def test_a_long_prompt_keeps_its_last_tokens(tiny_corpus):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_corpus / "tokenizer.json"))
    text = "the memory stores what it reads " * 20
    full = tokenizer.encode(text, add_special_tokens=False).ids
    assert prompt_ids(tokenizer, text, context=32, max_new=8, eos=0) == full[-24:]
    assert prompt_ids(tokenizer, "", context=32, max_new=8, eos=7) == [7]
    with pytest.raises(ValueError, match="--max-new-tokens=32 leaves no room"):
        prompt_ids(tokenizer, text, context=32, max_new=32, eos=0)


@pytest.fixture
def run_dir(tiny_corpus, tmp_path):
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layer=2, mixer=MixerConfig(name="gla", n_head=2))
    data = DataConfig(tokenizer=str(tiny_corpus / "tokenizer.json"), seq_len=48)
    save_checkpoint(tmp_path / "run", LanguageModel(config).eval(), RunConfig(model=config, data=data))
    return tmp_path / "run"


def test_generate_streams_text_and_reports_rates(run_dir):
    out = io.StringIO()
    stats = generate_cli(run_dir, "The memory", 6, Sampling(), seed=0, device="cpu", out=out)
    text = out.getvalue()
    assert text.rstrip().endswith("tokens/s on cpu]") and f"{stats['prompt_tokens']} prompt tokens" in text
    assert 0 <= stats["generated_tokens"] <= 6


def test_generate_cli_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nowhere"), "--prompt", "x"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "--prompt", "x", "--top-p", "2"]) == 2
    assert "--top-p=2.0 is invalid" in capsys.readouterr().err
    assert main(["generate", str(run_dir)]) == 2
    assert "exactly one of --prompt" in capsys.readouterr().err
    assert main(["generate", str(run_dir), "--prompt", "The", "--max-new-tokens", "3", "--temperature", "0.8"]) == 0
    assert "generated at" in capsys.readouterr().out
