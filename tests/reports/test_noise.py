"""Verdicts that tell a result from seed noise: a gap several times the noise holds, reversed it fails, inside the
noise it is within noise, and without a noise estimate it is only one seed. Seeds are blocks: what a seed does to
every row alike cancels out of a comparison."""

import csv

import pytest
from scipy.stats import kendalltau, ttest_rel

from miras.experiment import Claim, Column, Run, Table
from reports import noise
from reports.render import cells, load_summaries, render
from reports.scoring import check_claim, column_agreement, order_agreement
from tests.reports.test_render import summary, write

VAL, WIKI = "val/ppl", "eval/wikitext/word_perplexity"
ROWS = ("gated_deltanet-340m", "moneta-340m", "transformer-340m", "mamba-340m")


def table(seeds=(0, 1, 2), single=()) -> Table:
    runs = tuple(
        Run(name, name.split("-")[0], "340M", name, seeds=(0,) if name in single else seeds) for name in ROWS
    )
    return Table(
        paper="demo",
        key="noise",
        title="Noise",
        source="fixture",
        columns=(Column(VAL, "Val ppl", higher_is_better=False), Column(WIKI, "Wiki ppl", higher_is_better=False)),
        runs=runs,
        paper_numbers={(name, WIKI): v for name, v in zip(ROWS, (27.0, 26.0, 31.5, 30.8), strict=True)},
        claims=(Claim("Moneta beats Gated DeltaNet", "Table 2", WIKI, ("moneta-340m",), ("gated_deltanet-340m",),
                      proxy=VAL),),  # fmt: skip
    )


def write_values(reports_dir, t, values: dict[str, list[float]]) -> None:
    for name, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            write(reports_dir, t, summary(t, name, seed, {VAL: value}))


def verdict(reports_dir, t):
    grid = cells(t, load_summaries(reports_dir, t, "tiny"), "tiny")
    return check_claim(t, t.claims[0], grid), grid


BASE = [300.0, 303.0, 297.0]
OTHER = [310.0, 311.0, 309.0]


@pytest.mark.parametrize(
    ("moneta", "status"),
    [
        ([270.0, 274.0, 267.0], "holds"),  # 10 % better; about 0.5 % of noise
        ([330.0, 334.0, 327.0], "fails"),  # 10 % worse
        ([299.0, 304.0, 297.5], "within noise"),  # 0.2 % apart
    ],
)
def test_a_gap_reaches_its_verdict_by_its_size_against_the_seed_noise(tmp_path, moneta, status):
    t = table()
    write_values(tmp_path, t, {"gated_deltanet-340m": BASE, "moneta-340m": moneta, "transformer-340m": OTHER})
    found, _ = verdict(tmp_path, t)
    assert found.status == status
    assert "moneta vs gated_deltanet" in found.detail and "(3 shared seeds), p = " in found.detail


def test_a_seed_effect_shared_by_every_row_cancels_out_of_a_comparison(tmp_path):
    """Seed 2 reads other documents first and costs every row 20 %; Moneta stays 3 % ahead at every seed."""
    t = table()
    gdn = [300.0, 301.0, 360.0]
    write_values(tmp_path, t, {"gated_deltanet-340m": gdn, "moneta-340m": [v * 0.97 for v in gdn[:2]] + [349.5],
                               "transformer-340m": [320.0, 322.0, 383.0]})  # fmt: skip
    found, _ = verdict(tmp_path, t)
    assert found.status == "holds"
    unpaired = noise.sample_sd(gdn) / 300
    assert unpaired > 0.1  # an unpaired test would see 10 % of noise around a 3 % gap


def test_rows_without_a_noise_estimate_are_one_seed_however_wide_the_gap(tmp_path):
    t = table(seeds=(0,))
    write_values(tmp_path, t, {"gated_deltanet-340m": [300.0], "moneta-340m": [150.0], "transformer-340m": [310.0]})
    found, _ = verdict(tmp_path, t)
    assert found.status == "one seed" and "no noise estimate" in found.detail
    one_seeded = table(single=("gated_deltanet-340m", "moneta-340m", "mamba-340m"))
    write_values(tmp_path / "one", one_seeded, {"gated_deltanet-340m": [300.0], "moneta-340m": [150.0],
                                                "transformer-340m": OTHER})  # fmt: skip
    assert verdict(tmp_path / "one", one_seeded)[0].status == "one seed"  # one seeded row: no noise left to fit


def test_single_seed_rows_are_compared_through_the_noise_of_the_seeded_rows_of_their_group(tmp_path):
    """The claim's two rows have one seed each; Transformer++'s and Mamba's three seeds give the group its noise."""
    t = table(single=("gated_deltanet-340m", "moneta-340m"))
    wide = {"gated_deltanet-340m": [300.0], "moneta-340m": [270.0], "transformer-340m": BASE, "mamba-340m": OTHER}
    write_values(tmp_path / "wide", t, wide)
    narrow = {**wide, "moneta-340m": [298.0]}
    write_values(tmp_path / "narrow", t, narrow)
    assert verdict(tmp_path / "wide", t)[0].status == "holds"
    assert verdict(tmp_path / "narrow", t)[0].status == "within noise"


def test_between_two_rows_the_comparison_is_the_paired_t_test_on_logs():
    import math

    a, b = {0: 300.0, 1: 303.0, 2: 297.0, 3: 301.0}, {0: 296.0, 1: 292.0, 2: 299.0, 3: 290.0}
    fitted = noise.fit({"a": a, "b": b})
    found = noise.test([noise.Term(1.0, a, fitted), noise.Term(-1.0, b, fitted)])
    logs = [math.log(v) for v in a.values()], [math.log(v) for v in b.values()]
    assert fitted.df == 3 and found.p == pytest.approx(ttest_rel(*logs).pvalue)
    assert found.estimate == pytest.approx(sum(x - y for x, y in zip(*logs, strict=True)) / 4)
    shared = noise.test([noise.Term(1.0, {0: 1.0, 5: 2.0}, fitted), noise.Term(-1.0, a, fitted)])
    assert shared.seeds == 1
    assert noise.verdict(noise.test([noise.Term(1.0, a, None), noise.Term(-1.0, b, fitted)]), True) == "one seed"


def test_tau_is_kendalls_tau_b_and_ties_within_noise_count_in_neither_share(tmp_path):
    ours, paper = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 2.5}, {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}
    plain = order_agreement(ours, paper)
    assert plain.tau == pytest.approx(kendalltau(list(ours.values()), list(paper.values())).statistic)
    assert (plain.pairs, plain.ties) == (6, 0)
    tied = order_agreement(ours, paper, tie=lambda x, y: {x, y} == {"b", "c"})
    assert (tied.pairs, tied.ties) == (5, 1) and tied.share == pytest.approx(4 / 5)


def test_the_order_agreement_runs_on_the_proxy_with_ties_within_noise(tmp_path):
    t = table()
    write_values(tmp_path, t, {"gated_deltanet-340m": BASE, "moneta-340m": [299.0, 304.0, 296.0],
                               "transformer-340m": [360.0, 363.0, 357.0]})  # fmt: skip
    _, grid = verdict(tmp_path, t)
    agreement = column_agreement(t, grid)[WIKI]
    assert agreement.proxy == VAL and (agreement.pairs, agreement.ties, agreement.share) == (2, 1, 1.0)
    md = render(t, reports_dir=tmp_path)[0].read_text()
    assert "Wiki ppl on our Val ppl (a proxy) 1.00 (tau +0.82, 2 pairs, 1 ties within noise)" in md


def test_cells_show_the_spread_and_the_csv_every_seed(tmp_path):
    t = table()
    write_values(tmp_path, t, {"gated_deltanet-340m": BASE, "moneta-340m": [270.0], "transformer-340m": [1.0, 3.0]})
    md_path, csv_path = render(t, reports_dir=tmp_path)
    md = md_path.read_text()
    assert "| gated_deltanet | 300.00 ± 3.00 [3 seeds] | - (27.00) |" in md
    assert "| moneta | 270.00 | - (26.00) |" in md
    assert "Seed spread (relative standard deviation over seeds): Val ppl " in md
    assert "(340M, 2 rows, 5 runs)" in md
    rows = {(r["run"], r["column"]): r for r in csv.DictReader(csv_path.read_text().splitlines())}
    row = rows["gated_deltanet-340m", VAL]
    assert row["per_seed"] == "seed0=300.0000;seed1=303.0000;seed2=297.0000" and row["std"] == "3.0000"


def test_a_row_borrows_the_seeds_of_the_same_config_trained_for_another_table(tmp_path):
    t = table()
    other = Table(paper="demo", key="other", title="Other", source="fixture", columns=t.columns,
                  runs=(Run("moneta-full", "Moneta", "340M", "moneta-340m", seeds=(0, 1)),))  # fmt: skip
    write_values(tmp_path, other, {"moneta-full": [280.0, 282.0]})
    write_values(tmp_path, t, {"moneta-340m": [284.0]})
    found = {(s["run"], s["seed"]): s.get("borrowed") for s in load_summaries(tmp_path, t, "tiny")}
    assert found == {("moneta-340m", 0): None, ("moneta-340m", 1): "other/moneta-full"}
    md = render(t, reports_dir=tmp_path)[0].read_text()
    assert "| moneta | 283.00 ± 1.41 [2 seeds] |" in md
    assert "the same configs trained for other tables: moneta-340m seed 1 as other/moneta-full" in md


def slope_table() -> Table:
    from miras.experiment import Drop

    runs = tuple(Run(f"{m}-{c}", f"{m} {c}", "340M", f"{m}-340m", (f"data.seq_len={n}",), seeds=(0, 1, 2))
                 for m in ("moneta", "transformer") for c, n in (("2k", 2048), ("16k", 16384)))  # fmt: skip
    drops = tuple(Drop(f"{m}-drop", f"{m}, 2K to 16K", f"{m}-2k", f"{m}-16k") for m in ("moneta", "transformer"))
    claim = Claim("Moneta's perplexity falls more with context", "Figure 3", VAL, ("moneta-drop",),
                  ("transformer-drop",), from_text=True, drops=drops)  # fmt: skip
    return Table(paper="demo", key="slope", title="Slope", source="fixture",
                 columns=(Column(VAL, "Val ppl", higher_is_better=False),), runs=runs, claims=(claim,))  # fmt: skip


@pytest.mark.parametrize(("moneta_16k", "status"), [(300.0, "holds"), (385.0, "within noise"), (420.0, "fails")])
def test_a_slope_claim_compares_the_relative_drops_beyond_their_noise(tmp_path, moneta_16k, status):
    """Transformer++ falls 5 % from 2K to 16K; Moneta 25 %, 4 % or -5 %, each run with 0.5-1 % of its own noise."""
    t = slope_table()
    write_values(tmp_path, t, {"moneta-2k": [400.0, 404.0, 397.0],
                               "moneta-16k": [moneta_16k * j for j in (1.0, 0.995, 1.01)],
                               "transformer-2k": [400.0, 398.0, 403.0],
                               "transformer-16k": [380.0, 383.0, 378.0]})  # fmt: skip
    found, _ = verdict(tmp_path, t)
    assert found.status == status
    assert "moneta, 2K to 16K vs transformer, 2K to 16K: log drops differ by" in found.detail
