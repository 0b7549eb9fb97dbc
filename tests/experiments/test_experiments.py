from pathlib import Path

import pytest
import torch

from miras.cli import main
from miras.experiment import experiment_files, load_experiment
from miras.models import LanguageModel
from miras.scales import SCALES

ROOT = Path(__file__).resolve().parents[2] / "experiments"
FILES = experiment_files(ROOT)


def test_experiment_files_are_found():
    assert ROOT / "miras" / "table2.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_run_resolves_at_every_scale(path):
    table = load_experiment(path)
    assert table.runs and len({r.name for r in table.runs}) == len(table.runs)
    for run in table.runs:
        for scale in SCALES:
            run.config(scale)
        if run.unavailable() is None:
            with torch.device("meta"):
                LanguageModel(run.config("smoke").model)


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
    args = ["train", str(table2), *selection, "--scale", "smoke", "--runs-dir", str(tmp_path / "runs"), "--skip-done"]
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
