"""The paper's claims, order agreement and ratios: they separate results that agree with the paper from results
that reverse it, and never score what was not measured."""

import csv

import pytest

from miras.experiment import Claim, Column, Run, Table
from reports.render import cells, render, render_index
from reports.scoring import check_claim, column_agreement, paper_verdict, ratios
from tests.reports.test_render import summary, write

PAPER = {"transformer-340m": 30.0, "gated_deltanet-340m": 27.0, "moneta-340m": 26.0}


def table() -> Table:
    runs = tuple(Run(name, name.split("-")[0], "340M", name, seeds=(0, 1, 2)) for name in PAPER)
    return Table(
        paper="demo",
        key="claims",
        title="Claims",
        source="fixture",
        columns=(Column("eval/wikitext/word_perplexity", "Wiki ppl", higher_is_better=False),),
        runs=runs,
        paper_numbers={(name, "eval/wikitext/word_perplexity"): value for name, value in PAPER.items()},
        claims=(
            Claim(
                "Moneta beats every baseline",
                "Table 2",
                "eval/wikitext/word_perplexity",
                ("moneta-340m",),
                ("transformer-340m", "gated_deltanet-340m"),
            ),
        ),  # fmt: skip
        references=("gated_deltanet-340m",),
    )


def write_set(reports_dir, t, values, data="Hub", examples=500):
    """Three seeds a row, 1 % apart around ``values``."""
    for name, value in values.items():
        for seed, jitter in enumerate((1.0, 1.01, 0.99)):
            s = summary(t, name, seed, {"eval/wikitext/word_perplexity": value * jitter})
            s["eval"] = {"lm_eval": {"data": data, "lm_eval": "0.4.13", "n_samples": {"wikitext": examples}}}
            write(reports_dir, t, s)


def score(reports_dir, t):
    from reports.render import load_summaries

    grid = cells(t, load_summaries(reports_dir, t, "tiny"), "tiny")
    return check_claim(t, t.claims[0], grid), column_agreement(t, grid)["eval/wikitext/word_perplexity"], grid


def test_agreeing_and_reversed_results_score_differently_on_every_measure(tmp_path):
    t = table()
    write_set(tmp_path / "agree", t, {"transformer-340m": 300.0, "gated_deltanet-340m": 270.0, "moneta-340m": 250.0})
    write_set(tmp_path / "reverse", t, {"transformer-340m": 250.0, "gated_deltanet-340m": 270.0, "moneta-340m": 300.0})
    (agree, a_order, a_grid), (reverse, r_order, r_grid) = score(tmp_path / "agree", t), score(tmp_path / "reverse", t)
    assert paper_verdict(t, t.claims[0]) == "holds"
    assert (agree.status, reverse.status) == ("holds", "fails")
    assert (a_order.share, r_order.share) == (1.0, 0.0) and a_order.pairs == r_order.pairs == 3
    assert a_order.tau == pytest.approx(1.0) and r_order.tau == pytest.approx(-1.0)
    key = ("moneta-340m", "eval/wikitext/word_perplexity")
    assert ratios(t, a_grid)[key] == pytest.approx((250 / 270, 26 / 27))
    assert ratios(t, r_grid)[key][0] == pytest.approx(300 / 270)


def test_a_missing_row_leaves_a_claim_not_measured(tmp_path):
    t = table()
    write_set(tmp_path, t, {"gated_deltanet-340m": 270.0, "moneta-340m": 250.0})
    verdict, order, _ = score(tmp_path, t)
    assert verdict.status == "not measured" and "transformer" in verdict.detail
    assert order.pairs == 1


@pytest.mark.parametrize(("data", "examples"), [("offline fixtures (data/lm_eval)", 500), ("Hub", 5)])
def test_pipeline_checks_stay_out_of_claims_agreement_and_ratios(tmp_path, data, examples):
    t = table()
    write_set(tmp_path, t, {"transformer-340m": 300.0, "gated_deltanet-340m": 270.0, "moneta-340m": 250.0},
              data=data, examples=examples)  # fmt: skip
    verdict, order, grid = score(tmp_path, t)
    assert verdict.status == "not measured" and order.share is None
    assert all(o is None for o, _ in ratios(t, grid).values())
    md_path, csv_path = render(t, reports_dir=tmp_path)
    assert f"250.00 ± 2.50 [3 seeds, n={examples}] (26.00)" in md_path.read_text()
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert {r["pipeline_check"] for r in rows} == {"1"} and {r["delta"] for r in rows} == {""}


def test_the_scorecard_counts_claims_and_agreement(tmp_path):
    t = table()
    write_set(tmp_path, t, {"transformer-340m": 300.0, "gated_deltanet-340m": 270.0, "moneta-340m": 250.0})
    render(t, reports_dir=tmp_path)
    index = render_index(tmp_path, tables=[t]).read_text()
    assert "| [demo/claims](demo/claims.md) | tiny | 1 | 0 | 0 | 0 | 0 | 1.00 |" in index


def test_every_declared_claim_holds_on_the_papers_own_numbers():
    from pathlib import Path

    from miras.experiment import experiment_files, load_experiment

    root = Path(__file__).resolve().parents[2] / "experiments"
    claims = [(t, c) for t in map(load_experiment, experiment_files(root)) for c in t.claims]
    assert claims
    for t, claim in claims:
        if claim.only_at is not None and "paper" not in claim.only_at:
            continue  # a paper claim restated on columns or runs of a smaller scale, which the paper does not have
        assert paper_verdict(t, claim) == ("not measured" if claim.from_text else "holds"), f"{t.key}: {claim.text}"
