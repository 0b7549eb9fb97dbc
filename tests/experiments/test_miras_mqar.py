import json
from pathlib import Path

from experiments.miras.mqar import GRIDS, MIXERS, TABLE
from miras.cli import main
from miras.presets import MIRAS_GATES
from reports.render import harvest, render

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "miras" / "mqar.py"


def test_paper_and_small_are_zoology_sized_grids_and_tiny_two_cells_with_every_mixer():
    for scale in ("paper", "small"):
        grid = GRIDS[scale]
        assert 64 <= grid.d_model <= 256 and grid.lrs == (1e-4, 4.6e-4, 2.2e-3, 1e-2)
        assert all(4 <= p <= 64 and 64 <= t <= 512 and 4 * p <= t for p, t in grid.cells())
    tiny = TABLE.at("tiny")
    assert GRIDS["tiny"].cells() == [(4, 32), (8, 32)] and {r.group for r in tiny.runs} == {"P=4, T=32", "P=8, T=32"}
    assert set(tiny.sweeps()) == {f"{m}-P{p}-T32" for m in MIXERS for p in (4, 8)}
    assert len(tiny.runs) == 2 * 2 * len(MIXERS)
    seeds = {r.name.split("-")[0]: r.seeds for r in tiny.runs}
    assert seeds == {m: (0, 1, 2) if m in GRIDS["tiny"].seeded else (0,) for m in MIXERS}
    assert [c.better for c in tiny.claims] == [("moneta-P8-T32", "yaad-P8-T32", "memora-P8-T32")]
    assert TABLE.at("paper").claims == ()
    assert len(TABLE.at("paper").runs) == len(GRIDS["paper"].cells()) * len(MIXERS) * 4


def test_every_mixer_has_the_same_stack_and_the_miras_mixers_take_the_presets_gates():
    for run in TABLE.at("paper").runs:
        model = run.config("paper").model
        assert (model.n_layer, model.d_model, model.mlp, model.mixer.n_head) == (2, 128, False, 2)
        assert model.tie_embeddings
        for field, value in MIRAS_GATES.get(model.mixer.name, {}).items():
            assert getattr(model.mixer, field) == value


def test_a_cell_trains_zoologys_schedule_with_a_test_every_epoch_and_an_early_stop():
    config = TABLE.at("tiny").run("yaad-P4-T32-lr0.01").config("tiny")
    epoch = 16_384 // 64
    assert (config.data.dataset, config.data.seq_len, config.data.batch_size) == ("mqar", 32, 64)
    assert config.data.mqar.pairs == 4 and config.data.val_batches * 64 >= config.data.mqar.test_examples
    assert config.steps() == 8 * epoch and config.train.val_every == epoch and config.train.early_stop == 0.99
    assert (config.optim.lr, config.optim.warmup_fraction, config.optim.min_lr_ratio) == (0.01, 0.0, 0.0)
    assert (config.optim.beta2, config.optim.grad_clip, config.optim.weight_decay) == (0.999, 0.0, 0.1)


def test_smoke_trains_through_the_cli_and_renders_a_row_per_run_and_per_sweep(tmp_path, capsys):
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    argv = ["train", str(EXPERIMENT), "--scale", "smoke", "--runs-dir", str(runs), "--skip-done"]
    assert main([*argv, "--run", "gated_deltanet-*", "--run", "yaad-*"]) == 0
    summary = runs / "smoke" / "miras" / "mqar" / "yaad-P2-T16-lr0.01" / "seed0" / "summary.json"
    assert {"val/accuracy", "val/loss"} <= json.loads(summary.read_text())["metrics"].keys()
    assert main([*argv, "--run", "yaad-*"]) == 0 and "skip yaad-P2-T16-lr0.01 seed0: done" in capsys.readouterr().out

    harvest(runs, reports)
    md = render(TABLE, reports_dir=reports, scale="smoke")[0].read_text()
    assert "## P=2, T=16" in md and "| Yaad, optim.lr=0.01 | " in md
    assert "| Transformer++, optim.lr=0.01 | - | - |" in md
    assert "Best of each sweep on Test accuracy:" in md and "| Memora | - | - | - |" in md
    assert "| Gated DeltaNet | " in md and " | optim.lr=0.01 |" in md
