from pathlib import Path

import pytest
import torch

from miras.cli import main
from miras.config import ConfigError, config_hash
from miras.experiment import Claim, Column, Run, Table, experiment_files, load_experiment
from miras.models import LanguageModel
from miras.scales import SCALES

ROOT = Path(__file__).resolve().parents[2] / "experiments"
FILES = experiment_files(ROOT)


def test_experiment_files_are_found():
    assert ROOT / "miras" / "table2.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_run_resolves_at_every_scale(path):
    table = load_experiment(path)
    models = {}
    for scale in SCALES:
        runs = table.at(scale).runs
        assert runs and len({r.name for r in runs}) == len(runs)
        for run in runs:
            config = run.config(scale)
            if run.unavailable() is None and (scale == "smoke" or run.scale is not None):
                models[config_hash(config.model)] = config.model
    for model in models.values():
        with torch.device("meta"):
            LanguageModel(model)


def test_table2_is_complete():
    table = load_experiment(ROOT / "miras" / "table2.py")
    groups = {}
    for run in table.runs:
        groups.setdefault(run.group, []).append(run.name)
    assert [len(v) for v in groups.values()] == [10, 14, 10]
    # every row has the ten paper numbers and the derived average; only our val/ppl column has none
    assert len(table.paper_numbers) == 34 * 11
    assert table.paper_numbers["memora-340m", "eval/avg/acc"] == 45.51  # the mean of the eight accuracies
    assert table.paper_numbers["yaad-1.3b", "eval/wikitext/word_perplexity"] == 15.18
    assert table.paper_numbers["moneta_h-760m", "eval/boolq/acc"] == 62.43
    assert all(run.unavailable() is None for run in table.runs)


def test_dry_run_prints_counts_beside_paper_sizes(capsys):
    assert main(["dry-run", str(ROOT / "miras" / "table2.py"), "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "341.10M" in out and "+0.3%" in out
    assert "moneta-340m" in out and "344.59M" in out and "+1.4%" in out
    assert "gated_deltanet_h2-760m" in out and "747.05M" in out and "-1.7%" in out
    assert "unavailable" not in out


def test_training_an_unavailable_run_fails_clearly(capsys, monkeypatch):
    from miras.layers import MIXERS

    monkeypatch.delitem(MIXERS, "moneta")
    assert main(["train", str(ROOT / "miras" / "table2.py"), "--run", "moneta-340m", "--scale", "smoke"]) == 2
    assert "run 'moneta-340m' is unavailable" in capsys.readouterr().err


def test_list_shows_availability(capsys, monkeypatch):
    from miras.layers import MIXERS

    monkeypatch.delitem(MIXERS, "mamba")
    assert main(["list", str(ROOT / "miras" / "table2.py")]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "available" in out
    assert "samba-760m" in out and "unavailable" in out


SMOKE_RUNS = ("transformer-*", "moneta-340m", "samba-760m", "gated_deltanet_h2-760m", "mamba-340m", "ttt-340m")


def _reproduce_table2_at_smoke_scale(tmp_path, capsys, selection: list[str], expected: int):
    """The `make reproduce-table2 SCALE=smoke` pipeline on the offline corpus that `make install` prepares."""
    from miras.train import offline_corpus_dir
    from reports.render import harvest, render

    if not (offline_corpus_dir() / "manifest.json").exists():
        pytest.skip("offline corpus not prepared (run `make install`)")
    table2 = ROOT / "miras" / "table2.py"
    # seed 0 alone: the seeded rows' other seeds would only repeat the pipeline
    args = ["train", str(table2), *selection, "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--skip-done",
            "--seed", "0"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "done transformer-1.3b seed0" in out and "done samba-760m seed0" in out and "done moneta-340m seed0" in out
    seed_dir = tmp_path / "runs" / "smoke" / "miras" / "table2" / "transformer-340m" / "seed0"
    assert list(seed_dir.glob("events.out.tfevents.*")) and (seed_dir / "summary.json").exists()

    assert main(args) == 0
    assert "skip transformer-340m seed0: done" in capsys.readouterr().out

    # a folder trained under another config (here: a changed learning rate) is restarted, not resumed
    changed = [
        "train",
        str(table2),
        "--run",
        "transformer-340m",
        "--scale",
        "smoke",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seed",
        "0",
    ]
    assert main([*changed, "--skip-done", "--set", "optim.lr=1e-3"]) == 0
    assert "restart transformer-340m seed0" in capsys.readouterr().out
    assert main(args) == 0
    assert "restart transformer-340m seed0" in capsys.readouterr().out

    evaluate = ["eval", str(table2), "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--data", "fixtures"]
    assert main([*evaluate, "--limit", "1", "--only", "transformer-340m"]) == 0
    assert "eval/wikitext/word_perplexity" in capsys.readouterr().out

    assert len(harvest(tmp_path / "runs", tmp_path / "reports")) == expected
    md = render(load_experiment(table2), reports_dir=tmp_path / "reports")[0].read_text()
    assert "Scale: **smoke**" in md
    for label in ("Transformer++", "Samba*"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        assert row.split(" | ")[1] != "-"  # our val ppl is filled
    row = next(line for line in md.splitlines() if line.startswith("| Transformer++ |"))
    assert "-" not in row.split(" | ")[1::3]  # and every column of the evaluated row
    assert "lm-eval 0.4.13 zero-shot on offline fixtures (data/lm_eval), at most 1 documents per task" in md


def test_reproduce_table2_at_smoke_scale(tmp_path, capsys):
    """A row of every kind (attention, Miras, hybrids, mixer-only Mamba blocks, TTT) through the whole pipeline."""
    selection = [arg for run in SMOKE_RUNS for arg in ("--run", run)]
    _reproduce_table2_at_smoke_scale(tmp_path, capsys, selection, expected=8)


@pytest.mark.slow
def test_reproduce_all_of_table2_at_smoke_scale(tmp_path, capsys):
    _reproduce_table2_at_smoke_scale(tmp_path, capsys, ["--all"], expected=34)


def _pinned(name, scale, sweep=None, lr=1e-3, label="GDN", group="g"):
    from miras.presets import preset

    return Run(name, label, group, "gated_deltanet-340m", overrides=(f"optim.lr={lr}",), scale=scale,
               base=preset("gated_deltanet-340m"), sweep=sweep)  # fmt: skip


def test_a_table_at_a_scale_keeps_that_scales_runs_and_the_claims_on_them():
    runs = (
        _pinned("a-lr1", "tiny", "a", 1e-3),
        _pinned("a-lr2", "tiny", "a", 1e-2),
        _pinned("a-lr1", "paper", "a"),
        _pinned("b-lr1", "paper", "b", label="B"),
        Run("t", "T", "g", "transformer-340m"),
    )
    claim = Claim("b beats a", "fig", "val/ppl", ("b",), ("a",))
    table = Table("p", "k", "t", "s", (Column("val/ppl", "ppl"),), runs, claims=(claim,))
    tiny = table.at("tiny")
    assert [r.name for r in tiny.runs] == ["a-lr1", "a-lr2", "t"] and tiny.claims == ()
    assert [r.name for r in tiny.sweeps()["a"]] == ["a-lr1", "a-lr2"] and tiny.sweep_point("a-lr2") == "optim.lr=0.01"
    assert table.at("paper").claims == (claim,) and table.at("paper").sweep_point("a-lr1") == "optim.lr=0.001"
    assert tiny.run("a-lr2").config("tiny").optim.lr == 1e-2
    with pytest.raises(ConfigError, match="declared at scale 'tiny', not 'small'"):
        tiny.run("a-lr2").config("small")


def test_a_table_refuses_duplicate_runs_at_a_scale_and_sweeps_that_mix_rows():
    col = (Column("val/ppl", "ppl"),)
    with pytest.raises(ValueError, match="duplicate run names at scale tiny"):
        Table("p", "k", "t", "s", col, (_pinned("a", "tiny"), _pinned("a", "tiny")))
    with pytest.raises(ValueError, match="duplicate run names at scale tiny"):
        Table("p", "k", "t", "s", col, (_pinned("a", "tiny"), Run("a", "A", "g", "transformer-340m")))
    with pytest.raises(ValueError, match="sweep 'a' differ in label or group"):
        Table("p", "k", "t", "s", col, (_pinned("a1", "tiny", "a"), _pinned("a2", "tiny", "a", label="X")))
    with pytest.raises(ValueError, match="a base config needs the scale"):
        Run("a", "A", "g", "transformer-340m", base=_pinned("a", "tiny").base)


def test_a_run_outside_a_sweep_has_no_sweep_point():
    run = Run("t", "T", "g", "transformer-340m", overrides=("optim.lr=0.001",))
    table = Table("p", "k", "t", "s", (Column("val/ppl", "ppl"),), (run,))
    assert table.sweep_point("t") == ""
