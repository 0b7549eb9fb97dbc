import json

from experiments.ttr.fig2_online_regression import METHODS, Fig2Config, curves, reproduce


def test_figure2_shows_the_papers_ordering_and_writes_its_report(tmp_path):
    record = reproduce(Fig2Config(), tmp_path)
    assert all(record["ordering"].values()), record["ordering"]
    assert {p.name for p in tmp_path.iterdir()} == {"fig2.png", "fig2.md", "fig2.json"}
    saved = json.loads((tmp_path / "fig2.json").read_text())
    assert list(saved["curves"]) == list(METHODS) and all(len(c) == 256 for c in saved["curves"].values())
    assert "| Higher-order p=1 |" in (tmp_path / "fig2.md").read_text()


def test_without_a_ridge_rls_and_p1_blow_up_at_the_interpolation_threshold():
    fragile = curves(Fig2Config(seeds=2, ridge=1e-12))
    assert fragile["Unweighted RLS"][56:72].max() > 2
