import json

import pytest
import torch

from experiments.miras.mqar import MIXERS, SCALES, cells, main, model_config, reproduce, scale_config
from miras.config import ConfigError
from miras.presets import MIRAS_GATES

CPU = torch.device("cpu")


def test_smoke_scale_writes_a_report_with_a_row_per_mixer_and_skips_finished_cells(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    record = reproduce("smoke", runs, out, CPU, mixers=("gated_deltanet", "yaad"))
    assert {p.name for p in out.iterdir()} == {"smoke.md", "smoke.json"}
    assert [(c["mixer"], c["pairs"], c["seq_len"]) for c in record["cells"]] == [
        ("gated_deltanet", 2, 16),
        ("yaad", 2, 16),
    ]
    result = runs / "smoke" / "miras" / "mqar" / "yaad-P2-T16" / "lr0.01" / "result.json"
    assert json.loads(result.read_text())["cell"] == {"mixer": "yaad", "pairs": 2, "seq_len": 16, "lr": 0.01}
    md = (out / "smoke.md").read_text()
    assert "| Gated DeltaNet | " in md and "| Yaad | " in md and "| Transformer++ |" not in md
    assert "| chance (1/P) | 0.500 |" in md and "--scale smoke --mixers gated_deltanet,yaad`" in md
    assert json.loads((out / "smoke.json").read_text())["scale"] == "smoke"

    monkeypatch.setattr("experiments.miras.mqar.fit", None)  # training again would fail
    again = reproduce("smoke", runs, out, CPU, mixers=("gated_deltanet", "yaad"))
    assert again["cells"] == record["cells"]


def test_an_unknown_mixer_or_scale_names_the_field_and_the_allowed_values(capsys):
    with pytest.raises(ConfigError, match=r"mqar\.mixers=.*'gdn'.*allowed values: transformer, gated_deltanet"):
        scale_config("smoke", ("transformer", "gdn"))
    with pytest.raises(ConfigError, match=r"mqar\.scale='huge' is invalid; allowed values: paper, small, tiny, smoke"):
        scale_config("huge")
    with pytest.raises(SystemExit):
        main(["--scale", "huge"])
    assert "allowed values: paper, small, tiny, smoke" in capsys.readouterr().err


def test_a_report_is_named_after_its_scale(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny.md").write_text("tiny report")
    reproduce("smoke", tmp_path / "runs", out, CPU, mixers=("transformer",))
    assert (out / "tiny.md").read_text() == "tiny report" and (out / "smoke.md").exists()


def test_the_miras_mixers_take_the_presets_gates_and_every_mixer_has_the_same_stack():
    config = SCALES["paper"]
    for mixer in MIXERS:
        model = model_config(config, mixer)
        assert (model.n_layer, model.d_model, model.mlp, model.mixer.n_head) == (2, 128, False, 2)
        for field, value in MIRAS_GATES.get(mixer, {}).items():
            assert getattr(model.mixer, field) == value


def test_paper_and_small_are_zoology_sized_grids_and_tiny_is_one_cell():
    for scale in ("paper", "small"):
        config = SCALES[scale]
        assert 64 <= config.d_model <= 256 and config.lrs == (1e-4, 4.6e-4, 2.2e-3, 1e-2)
        assert all(4 <= p <= 64 for p, _ in cells(config)) and all(64 <= t <= 512 for _, t in cells(config))
    assert cells(SCALES["tiny"]) == [(4, 32)] and set(SCALES["tiny"].mixers) == set(MIXERS)
