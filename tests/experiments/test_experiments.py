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
    # every row has all ten paper numbers, and only our val/ppl column has none
    assert len(table.paper_numbers) == 34 * 10
    assert table.paper_numbers["yaad-1.3b", "eval/wikitext/word_perplexity"] == 15.18
    assert table.paper_numbers["moneta_h-760m", "eval/boolq/acc"] == 62.43
    available = {r.name for r in table.runs if r.unavailable() is None}
    assert {
        f"{m}-{s}" for m in ("transformer", "moneta", "yaad", "memora") for s in ("340m", "760m", "1.3b")
    } <= available


def test_dry_run_prints_counts_beside_paper_sizes(capsys):
    assert main(["dry-run", str(ROOT / "miras" / "table2.py"), "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "341.10M" in out and "+0.3%" in out
    assert "moneta-340m" in out and "382.34M" in out
    assert "moneta_h-760m" in out and "unavailable: mixer 'moneta_h' is not implemented yet" in out


def test_training_an_unavailable_run_fails_clearly(capsys, monkeypatch):
    from miras.layers import MIXERS

    monkeypatch.delitem(MIXERS, "moneta")
    assert main(["train", str(ROOT / "miras" / "table2.py"), "--run", "moneta-340m", "--scale", "smoke"]) == 2
    assert "run 'moneta-340m' is unavailable" in capsys.readouterr().err


def test_list_shows_availability(capsys):
    assert main(["list", str(ROOT / "miras" / "table2.py")]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "available" in out and "unavailable" in out


def test_reproduce_table2_at_smoke_scale(tmp_path, capsys):
    """The `make reproduce-table2 SCALE=smoke` pipeline on the offline corpus that `make install` prepares."""
    from miras.train import offline_corpus_dir
    from reports.render import harvest, render

    if not (offline_corpus_dir() / "manifest.json").exists():
        pytest.skip("offline corpus not prepared (run `make install`)")
    table2 = ROOT / "miras" / "table2.py"
    runs = tmp_path / "runs"
    assert main(["train", str(table2), "--all", "--scale", "smoke", "--runs-dir", str(runs), "--skip-done"]) == 0
    out = capsys.readouterr().out
    assert "skip moneta_h-760m: unavailable" in out and "done transformer-1.3b seed0" in out
    assert "done moneta-340m seed0" in out and "done memora-1.3b seed0" in out
    seed_dir = runs / "smoke" / "miras" / "table2" / "transformer-340m" / "seed0"
    assert list(seed_dir.glob("events.out.tfevents.*")) and (seed_dir / "summary.json").exists()

    assert main(["train", str(table2), "--all", "--scale", "smoke", "--runs-dir", str(runs), "--skip-done"]) == 0
    assert "skip transformer-340m seed0: done" in capsys.readouterr().out

    assert len(harvest(runs, tmp_path / "reports")) == 12
    md = render(load_experiment(table2), reports_dir=tmp_path / "reports")[0].read_text()
    assert "Scale: **smoke**" in md
    row = next(line for line in md.splitlines() if line.startswith("| Transformer++ |"))
    assert row.split(" | ")[1] != "-"  # our val ppl is filled
