from pathlib import Path

from experiments.ttr.fig3_mqar import GRIDS, LAYERS, TABLE, paper_value, sweep_name
from miras.cli import main
from miras.models import LanguageModel
from reports import scoring
from reports.render import cells, harvest, load_summaries, render

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "ttr" / "fig3_mqar.py"


def test_the_model_is_one_mixer_with_a_length_2_key_convolution_and_no_mlp():
    for layer in LAYERS:
        model = LanguageModel(TABLE.at("paper").run(f"{layer}-P64-T512-lr0.01").config("paper").model)
        (block,) = model.blocks
        assert block.mlp is None and block.mixer.k_conv.conv.kernel_size == (2,)
        assert model.config.d_model == 64 and block.mixer.n_head == 1 and model.lm_head.weight is model.embed.weight


def test_paper_scale_is_the_papers_grid_and_every_scale_is_its_own():
    paper = TABLE.at("paper")
    assert {(r.group, r.label) for r in paper.runs} == {
        (f"P={p}, T={t}", label) for p in (64, 128) for t in (512, 1024, 2048, 4096) for label in LAYERS.values()
    }
    assert len(paper.runs) == 2 * 4 * 2 * 4 and len(paper.sweeps()) == 16
    tiny = {f"{sweep_name(layer, p, 128)}-lr0.01" for layer in LAYERS for p in (16, 32)}
    assert {r.name for r in TABLE.at("tiny").runs} == tiny
    assert GRIDS["paper"].train_examples == 100_000 and GRIDS["paper"].epochs == 64


def test_cells_compare_with_the_paper_at_the_same_pairs_per_dimension():
    assert paper_value("linear_attention", 128, 2048) == 0.921
    assert paper_value("linear_attention", 32, 128, d_model=16) == 0.934  # P / d = 2, T = 512's value
    assert paper_value("linear_attention", 16, 128, d_model=16) == paper_value("rls", 128, 4096) == 1.0
    assert TABLE.paper_numbers[sweep_name("linear_attention", 32, 128), "val/accuracy"] == 0.934


def test_the_claim_is_la_below_rls_at_twice_d_model_pairs_at_each_scale():
    assert [c.better + c.worse for c in TABLE.at("tiny").claims] == [
        (sweep_name("rls", 32, 128), sweep_name("linear_attention", 32, 128))
    ]
    assert len(TABLE.at("paper").claims) == 4
    assert all(scoring.paper_verdict(TABLE, c) == "holds" for c in TABLE.claims)


def test_smoke_trains_and_renders_the_figure_and_its_claim(tmp_path):
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    assert main(["train", str(EXPERIMENT), "--all", "--scale", "smoke", "--runs-dir", str(runs)]) == 0
    harvest(runs, reports)
    paths = render(TABLE, reports_dir=reports, scale="smoke")
    md = paths[0].read_text()
    assert "| Unweighted RLS, optim.lr=0.01 | " in md and "(0.934)" in md
    assert "unweighted RLS recalls more than linear attention" in md
    assert any(p.name == "sweep.png" for p in paths)
    table = TABLE.at("smoke")
    grid = cells(table, load_summaries(reports, table, "smoke"), "smoke")
    assert grid[sweep_name("rls", 128, 512), "val/accuracy"].best == "rls-P128-T512-lr0.01"
