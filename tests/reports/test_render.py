import dataclasses
import json

from miras.config import config_hash
from miras.experiment import Column, Run, Table
from reports.render import harvest, render, render_index


def fixture_table() -> Table:
    return Table(
        paper="demo",
        key="t1",
        title="Demo",
        source="fixture",
        columns=(Column("val/ppl", "Val ppl", higher_is_better=False), Column("eval/piqa/acc", "PIQA", scale=100)),
        runs=(
            Run("transformer-340m", "Transformer++", "340M", "transformer-340m", seeds=(0, 1)),
            Run("rls-760m", "RLS", "760M", "rls-780m"),
            Run("swa-340m", "SWA", "340M", "swa-340m", overrides=("model.mixer.window=512",)),
        ),
        paper_numbers={("transformer-340m", "eval/piqa/acc"): 62.98, ("rls-760m", "eval/piqa/acc"): 63.99},
    )


def summary(table, run_name, seed, metrics, scale="tiny", stale=False):
    config = table.run(run_name).config(scale)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    return {
        "paper": table.paper,
        "table": table.key,
        "run": run_name,
        "seed": seed,
        "scale": scale,
        "config_hash": "0" * 12 if stale else config_hash(config),
        "git": {"sha": "abc1234567890", "dirty": False},
        "device": "cpu",
        "world_size": 1,
        "steps": 8,
        "tokens": 2048,
        "wall_s": 1.0,
        "metrics": metrics,
    }


def write(reports_dir, table, s):
    path = reports_dir / table.paper / table.key / "summaries" / s["scale"] / f"{s['run']}.seed{s['seed']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s))


def test_render_reduces_marks_missing_and_stale(tmp_path, monkeypatch):
    import miras.layers

    monkeypatch.setattr(miras.layers, "implemented", lambda name: name != "rls")
    table = fixture_table()
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 10.0, "eval/piqa/acc": 0.60}))
    write(tmp_path, table, summary(table, "transformer-340m", 1, {"val/ppl": 12.0, "eval/piqa/acc": 0.64}))
    write(tmp_path, table, summary(table, "swa-340m", 0, {"val/ppl": 9.0}, stale=True))
    md_path, csv_path = render(table, reports_dir=tmp_path)
    md = md_path.read_text()
    assert "Scale: **tiny**" in md
    assert "| Model | Val ppl ↓ | PIQA ↑ |" in md
    assert "| Transformer++ | 11.00 ± 1.41 [2 seeds] | 62.00 ± 2.83 [2 seeds] (62.98) |" in md
    assert "| RLS (unavailable) | - | - (63.99) |" in md
    assert "| SWA | stale | - |" in md
    assert "abc1234567" in md and "summaries: 3" in md
    rows = csv_path.read_text().splitlines()
    assert rows[1].startswith("demo,t1,tiny,340M,transformer-340m,Transformer++,val/ppl,11.0000,,,2,ok")

    before = md_path.read_bytes(), csv_path.read_bytes()
    render(table, reports_dir=tmp_path)
    assert (md_path.read_bytes(), csv_path.read_bytes()) == before


def test_render_without_summaries_shows_paper_numbers_only(tmp_path):
    md = render(fixture_table(), reports_dir=tmp_path)[0].read_text()
    assert "Scale: **paper**" in md and "| Transformer++ | - | - (62.98) |" in md


def test_harvest_copies_finished_runs_once(tmp_path):
    src = tmp_path / "runs" / "smoke" / "miras" / "table2" / "transformer-340m" / "seed0"
    src.mkdir(parents=True)
    (src / "summary.json").write_text('{"run": "transformer-340m"}')
    (tmp_path / "runs" / "smoke" / "miras" / "table2" / "unfinished" / "seed0").mkdir(parents=True)
    copied = harvest(tmp_path / "runs", tmp_path / "reports")
    assert [p.relative_to(tmp_path / "reports").as_posix() for p in copied] == [
        "miras/table2/summaries/smoke/transformer-340m.seed0.json"
    ]
    assert harvest(tmp_path / "runs", tmp_path / "reports") == []


def test_rendering_twice_changes_nothing_and_the_index_lists_every_report(tmp_path):
    table = fixture_table()
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 30.0, "eval/piqa/acc": 0.6}))
    outputs = [*render(table, reports_dir=tmp_path), render_index(tmp_path)]
    first = [p.read_bytes() for p in outputs]
    assert [*render(table, reports_dir=tmp_path), render_index(tmp_path)] == outputs
    assert [p.read_bytes() for p in outputs] == first
    assert "- [t1](demo/t1.md): Demo" in outputs[-1].read_text()


def test_a_smaller_scale_renders_beside_the_tracked_report_and_never_over_it(tmp_path):
    table = fixture_table()
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 30.0, "eval/piqa/acc": 0.6}))
    tracked = render(table, reports_dir=tmp_path)
    before = {p: p.read_bytes() for p in tracked}
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 8000.0}, scale="smoke"))
    smoke = render(table, reports_dir=tmp_path, scale="smoke")
    assert {p: p.read_bytes() for p in tracked} == before
    assert smoke[0] == tmp_path / "demo" / "t1" / "smoke" / "t1.md"
    assert "Scale: **smoke**" in smoke[0].read_text() and "8000.00" in smoke[0].read_text()
    assert render(table, reports_dir=tmp_path) == tracked
    assert {p: p.read_bytes() for p in tracked} == before


def test_a_larger_scale_takes_over_the_tracked_report(tmp_path):
    table = fixture_table()
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 30.0}))
    write(tmp_path, table, summary(table, "transformer-340m", 0, {"val/ppl": 20.0}, scale="small"))
    md = render(table, reports_dir=tmp_path, scale="small")[0]
    assert md == tmp_path / "demo" / "t1.md" and "Scale: **small**" in md.read_text()


def test_a_sweep_row_takes_every_column_from_its_best_run_on_the_first_column(tmp_path):
    from miras.presets import preset

    base = preset("gated_deltanet-340m")
    runs = tuple(
        Run(f"gdn-lr{lr}", "GDN", "g", "gated_deltanet-340m", (f"optim.lr={lr}",), scale="tiny", base=base, sweep="gdn")
        for lr in (0.001, 0.01, 0.1)
    )
    table = Table("demo", "sw", "Sweep", "fixture", (Column("val/ppl", "ppl", higher_is_better=False),
                  Column("steps", "Steps", digits=0)), runs, paper_numbers={("gdn", "val/ppl"): 9.0})  # fmt: skip
    for run, ppl in zip(runs[:2], (12.0, 10.0), strict=True):
        s = summary(table, run.name, 0, {"val/ppl": ppl})
        write(tmp_path, table, s | {"steps": 8 if ppl == 12.0 else 5})
    md = render(table, reports_dir=tmp_path)[0].read_text()
    assert "| GDN, optim.lr=0.001 | 12.00 | 8 |" in md and "| GDN, optim.lr=0.1 | - | - |" in md
    assert "| GDN | 10.00 (9.00) | 5 | optim.lr=0.01 |" in md
