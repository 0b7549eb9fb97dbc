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
    assert {r.name for r in table.runs if r.unavailable() is None} == {
        "transformer-340m",
        "transformer-760m",
        "transformer-1.3b",
    }


def test_dry_run_prints_counts_beside_paper_sizes(capsys):
    assert main(["dry-run", str(ROOT / "miras" / "table2.py"), "--scale", "paper"]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "341.10M" in out and "+0.3%" in out
    assert "moneta-340m" in out and "unavailable: mixer 'moneta' is not implemented yet" in out


def test_training_an_unavailable_run_fails_clearly(capsys):
    assert main(["train", str(ROOT / "miras" / "table2.py"), "--run", "moneta-340m", "--scale", "smoke"]) == 2
    assert "run 'moneta-340m' is unavailable" in capsys.readouterr().err


def test_list_shows_availability(capsys):
    assert main(["list", str(ROOT / "miras" / "table2.py")]) == 0
    out = capsys.readouterr().out
    assert "transformer-340m" in out and "available" in out and "unavailable" in out
