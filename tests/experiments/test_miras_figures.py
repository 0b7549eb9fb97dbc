"""Figures 3 and 4 and Table 3 at tiny: grids thinned for a CPU that keep the paper's configs, reuse Table 2's runs
by config hash, and check the paper's claims on what they train."""

from pathlib import Path

import pytest

from miras.config import config_hash
from miras.experiment import Claim, Column, Run, Table, load_experiment

ROOT = Path(__file__).resolve().parents[2] / "experiments" / "miras"


def hashes(table: Table, scale: str = "tiny") -> dict[str, str]:
    return {config_hash(r.config(scale, seed=0)): r.name for r in table.at(scale).runs}


def test_figure3_at_tiny_is_the_size_panel_and_one_context_panel_reusing_table2():
    fig3 = load_experiment(ROOT / "fig3_scaling.py")
    tiny = fig3.at("tiny")
    assert len(tiny.runs) == 3 * 6 + 2 * 6 and {r.group for r in tiny.runs} == {"120M", "340M", "760M"}
    contexts = {r.config("tiny").data.seq_len for r in tiny.runs if r.group == "340M"}
    assert contexts == {128, 256, 1024}
    shared = set(hashes(fig3)) & set(hashes(load_experiment(ROOT / "table2.py")))
    assert len(shared) == 11  # 340M and 760M at 4K, but Mamba2 340M (Table 2 has no such row)
    slope = [c for c in tiny.claims if c.drops]
    assert len(slope) == 1 and len(tiny.claims) == 4
    assert {(d.start, d.end) for d in slope[0].drops} >= {("moneta-340m-ctx2k", "moneta-340m-ctx16k")}
    assert len(fig3.at("paper").runs) == 66 and len([c for c in fig3.at("paper").claims if c.drops]) == 2


def test_figure4_at_tiny_is_p_1_to_4_and_q_2_to_5_at_two_contexts():
    fig4 = load_experiment(ROOT / "fig4_pq.py")
    tiny = fig4.at("tiny")
    assert len(tiny.runs) == 4 * 2 + 3 * 2 and len(tiny.claims) == 4
    assert all(set(c.row_names()) <= {r.name for r in tiny.runs} for c in tiny.claims)
    moneta = load_experiment(ROOT / "table2.py").run("moneta-340m").config("tiny", seed=0)
    assert hashes(fig4)[config_hash(moneta)] == "moneta-p3-q4-ctx4k"
    assert len(fig4.at("paper").runs) == 40 and len(fig4.at("paper").claims) == 8


def test_table3_at_tiny_has_lengths_within_the_tiny_context_and_its_own_claims():
    table3 = load_experiment(ROOT / "table3_niah.py")
    tiny, paper = table3.at("tiny"), table3.at("paper")
    assert [c.title for c in tiny.columns] == ["PK 256", "PK 384", "N 256", "N 384", "W 384"]
    assert len(paper.columns) == 9 and len(paper.paper_numbers) == 63 and not tiny.paper_numbers
    assert {c.metric for c in tiny.claims} == {f"eval/niah_single_{k}/384" for k in (1, 2, 3)}
    assert {c.metric for c in paper.claims} == {"eval/niah_single_2/8192", "eval/niah_single_3/4096",
                                                "eval/niah_single_1/8192"}  # fmt: skip


def test_only_at_limits_runs_columns_and_claims_and_is_checked():
    col = Column("val/ppl", "ppl", higher_is_better=False)
    runs = (Run("a", "A", "g", "transformer-340m"), Run("b", "B", "g", "transformer-340m", only_at=("paper",)))
    claims = (Claim("a beats b", "fig", "val/ppl", ("a",), ("b",)),
              Claim("a beats a", "fig", "val/ppl", ("a",), ("a",), only_at=("tiny",)))  # fmt: skip
    table = Table("p", "k", "t", "s", (col, Column("x", "x", only_at=("paper",))), runs, claims=claims)
    tiny = table.at("tiny")
    assert [r.name for r in tiny.runs] == ["a"] and [c.key for c in tiny.columns] == ["val/ppl"]
    assert [c.text for c in tiny.claims] == ["a beats a"]
    assert [c.text for c in table.at("paper").claims] == ["a beats b"]
    with pytest.raises(ValueError, match="only_at=.* is invalid; allowed values"):
        Run("c", "C", "g", "transformer-340m", only_at=("huge",))
    with pytest.raises(ValueError, match="only_at=.* is invalid"):
        Claim("x", "s", "val/ppl", ("a",), ("b",), only_at=())


def test_skip_done_leaves_a_run_whose_config_another_table_has_trained(tmp_path, capsys, monkeypatch):
    """Figure 3's Transformer++ 340M at 4K is Table 2's row: its tracked summary counts, nothing is trained."""
    import miras.train
    from miras.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("trained a run whose config is done")

    monkeypatch.setattr(miras.train, "train", refuse)
    tracked = ROOT.parents[1] / "reports/miras/table2/summaries/tiny/transformer-340m.seed0.json"
    assert tracked.exists()
    args = ["train", str(ROOT / "fig3_scaling.py"), "--run", "transformer-340m-ctx4k", "--scale", "tiny",
            "--runs-dir", str(tmp_path), "--skip-done", "--seed", "0"]  # fmt: skip
    assert main(args) == 0
    assert f"skip transformer-340m-ctx4k seed0: the same config is done ({tracked})" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())
