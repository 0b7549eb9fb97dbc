import csv
import json
from pathlib import Path

import pytest

from miras.config import config_hash
from miras.experiment import experiment_files, load_experiment
from reports.plots import SWEEPS, curves_dir, read_curve
from reports.render import harvest, render, summaries_dir

ROOT = Path(__file__).resolve().parents[2] / "experiments"
SCALE = "smoke"


def fake_summary(table, run, seed, index):
    """A summary of ``run`` trained with its declared config, every column filled with a distinct number."""
    return {
        "paper": table.paper,
        "table": table.runs_key,
        "run": run.name,
        "seed": seed,
        "scale": SCALE,
        "config_hash": config_hash(run.config(SCALE, seed=seed)),
        "git": {"sha": "abc1234567890", "dirty": False},
        "device": "cpu",
        "world_size": 1,
        "steps": 8,
        "tokens": 2048,
        "wall_s": 1.0,
        "metrics": {col.key: 0.5 + 0.01 * index for col in table.columns},
    }


def write_fixtures(reports_dir, table):
    """Summaries and curve files for every run and seed of ``table``, as ``harvest`` lays them out."""
    for index, run in enumerate(table.runs):
        for seed in run.seeds:
            summary = fake_summary(table, run, seed, index)
            name = f"{run.name}.seed{seed}.json"
            curve = {"config_hash": summary["config_hash"], "tag": "train/loss", "step": [1, 2, 3]}
            curve["value"] = [9.0 - index * 0.01, 7.0, 6.0 + index * 0.01]
            for folder, record in ((summaries_dir, summary), (curves_dir, curve)):
                path = folder(reports_dir, table, SCALE) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record))


@pytest.mark.parametrize("path", experiment_files(ROOT), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_experiment_renders_from_fixture_summaries(tmp_path, path):
    table = load_experiment(path).at(SCALE)
    write_fixtures(tmp_path, table)
    outputs = render(table, reports_dir=tmp_path, scale=SCALE)
    md = outputs[0].read_text()
    assert f"Scale: **{SCALE}**" in md and "| Model |" in md
    rows = list(csv.DictReader(outputs[1].read_text().splitlines()))
    rows_per_column = len(table.runs) + len(table.sweeps())
    assert len(rows) == rows_per_column * len(table.columns) and all(r["status"] == "ok" for r in rows)
    pngs = {p.name for p in outputs if p.suffix == ".png"}
    expected = set() if table.trained_in else {"train_loss.png"}
    if (table.paper, table.key) in SWEEPS:
        expected.add("sweep.png")
    assert pngs == expected
    for name in pngs:
        assert f"]({table.key}/{name})" in md
    first = [p.read_bytes() for p in outputs]
    assert render(table, reports_dir=tmp_path, scale=SCALE) == outputs
    assert [p.read_bytes() for p in outputs] == first


def test_stale_curves_are_not_drawn(tmp_path):
    table = load_experiment(ROOT / "miras" / "table4_yaad_ablation.py")
    write_fixtures(tmp_path, table)
    for path in curves_dir(tmp_path, table, SCALE).glob("*.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "config_hash": "0" * 12}))
    outputs = render(table, reports_dir=tmp_path, scale=SCALE)
    assert [p.suffix for p in outputs] == [".md", ".csv"] and "## Figures" not in outputs[0].read_text()


def write_events(folder, points):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for step, value in points:
        writer.add_scalar("train/loss", value, step)
        writer.add_scalar("train/lr", 0.1, step)
    writer.close()


def test_harvest_saves_the_curve_of_a_resumed_run(tmp_path):
    run_dir = tmp_path / "runs" / "smoke" / "miras" / "fig4_pq" / "moneta-p3-q4-ctx2k" / "seed0"
    run_dir.mkdir(parents=True)
    write_events(run_dir, [(1, 5.0), (2, 4.0), (3, 3.5)])
    write_events(run_dir, [(3, 3.0), (4, 2.5)])  # resumed after step 2: its step 3 replaces the first one's
    (run_dir / "summary.json").write_text(json.dumps({"run": "moneta-p3-q4-ctx2k", "config_hash": "abc"}))
    assert read_curve(run_dir) == {"tag": "train/loss", "step": [1, 2, 3, 4], "value": [5.0, 4.0, 3.0, 2.5]}

    copied = harvest(tmp_path / "runs", tmp_path / "reports")
    assert [p.name for p in copied] == ["moneta-p3-q4-ctx2k.seed0.json"]
    curve = tmp_path / "reports" / "miras" / "fig4_pq" / "curves" / "smoke" / "moneta-p3-q4-ctx2k.seed0.json"
    assert json.loads(curve.read_text())["config_hash"] == "abc"
    assert harvest(tmp_path / "runs", tmp_path / "reports") == []
