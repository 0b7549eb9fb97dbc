import dataclasses
import json

import torch

from experiments.ttr.fig3_mqar import (
    SCALES,
    loss_and_accuracy,
    model_config,
    ordering_holds,
    paper_value,
    reproduce,
    train_cell,
)
from miras.models import LanguageModel

CPU = torch.device("cpu")


def test_the_model_is_one_mixer_with_a_length_2_key_convolution_and_no_mlp():
    for layer in ("linear_attention", "rls"):
        model = LanguageModel(model_config(SCALES["small"], layer))
        (block,) = model.blocks
        assert block.mlp is None and block.mixer.k_conv.conv.kernel_size == (2,)
        assert model.config.d_model == 64 and block.mixer.n_head == 1 and model.lm_head.weight is model.embed.weight


def test_loss_reads_only_the_queried_positions():
    model = LanguageModel(model_config(dataclasses.replace(SCALES["smoke"], vocab_size=64), "rls"))
    ids = torch.randint(0, 64, (2, 16))
    labels = torch.full((2, 16), -100)
    labels[0, 5], labels[1, 9] = 40, 50
    loss, acc = loss_and_accuracy(model, {"input_ids": ids, "labels": labels})
    logits, _ = model(ids)
    expected = torch.nn.functional.cross_entropy(logits[[0, 1], [5, 9]], torch.tensor([40, 50]))
    torch.testing.assert_close(loss, expected)
    assert acc.shape == (2,)


def test_a_finished_cell_is_not_trained_again(tmp_path, monkeypatch):
    config = SCALES["smoke"]
    first = train_cell(config, "linear_attention", 128, 512, 1e-2, tmp_path, CPU)
    assert json.loads((tmp_path / "result.json").read_text())["hash"] == first["hash"]
    monkeypatch.setattr("experiments.ttr.fig3_mqar.LanguageModel", None)  # training again would fail
    assert train_cell(config, "linear_attention", 128, 512, 1e-2, tmp_path, CPU) == first


def test_smoke_scale_writes_the_report(tmp_path):
    record = reproduce("smoke", tmp_path / "runs", tmp_path / "out", CPU)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"fig3.png", "fig3.md", "fig3.json"}
    assert [(c["layer"], c["pairs"], c["seq_len"]) for c in record["cells"]] == [
        ("linear_attention", 128, 512),
        ("rls", 128, 512),
    ]
    md = (tmp_path / "out" / "fig3.md").read_text()
    assert "| Linear attention | 128 | 512 |" in md and "| 0.934 |" in md and "scale **smoke**" in md
    assert list(record["ordering"]) == ["LA < RLS at P=128, T=512"]


def test_a_smaller_scale_does_not_replace_a_larger_scales_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "fig3.json").write_text(json.dumps({"scale": "tiny"}))
    record = reproduce("smoke", tmp_path / "runs", out, CPU)
    assert json.loads((out / "fig3.json").read_text()) == {"scale": "tiny"}
    assert record["out"] == tmp_path / "runs" / "smoke" / "ttr" / "fig3" / "report"
    assert json.loads((record["out"] / "fig3.json").read_text())["scale"] == "smoke"


def test_ordering_compares_la_with_rls_at_128_pairs():
    grid = {("linear_attention", 128, 512): {"accuracy": 0.9}, ("rls", 128, 512): {"accuracy": 1.0}}
    assert ordering_holds(grid) == {"LA < RLS at P=128, T=512": True}
    grid["rls", 128, 512]["accuracy"] = 0.8
    assert ordering_holds(grid) == {"LA < RLS at P=128, T=512": False}


def test_cells_compare_with_the_paper_at_the_same_pairs_per_dimension():
    assert paper_value("linear_attention", 128, 2048) == 0.921
    assert paper_value("linear_attention", 32, 128, d_model=16) == 0.934  # P / d = 2, T = 512's value
    assert paper_value("linear_attention", 16, 128, d_model=16) == paper_value("rls", 128, 4096) == 1.0
    grid = {("linear_attention", 32, 128): {"accuracy": 0.5}, ("rls", 32, 128): {"accuracy": 0.6}}
    assert ordering_holds(grid, d_model=16) == {"LA < RLS at P=32, T=128": True}
