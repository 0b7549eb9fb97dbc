"""Verdicts that tell a result from seed noise: a gap several spreads wide holds, reversed it fails, inside the
spread it is within noise, and with one seed and nothing to pool it is only one seed."""

import csv

import pytest
from scipy.stats import kendalltau, ttest_ind

from miras.experiment import Claim, Column, Run, Table
from reports import noise
from reports.render import cells, load_summaries, render
from reports.scoring import check_claim, column_agreement, order_agreement
from tests.reports.test_render import summary, write

VAL, WIKI = "val/ppl", "eval/wikitext/word_perplexity"
ROWS = ("gated_deltanet-340m", "moneta-340m", "transformer-340m")


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
        paper_numbers={(name, WIKI): v for name, v in zip(ROWS, (27.0, 26.0, 31.5), strict=True)},
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


@pytest.mark.parametrize(
    ("moneta", "status"),
    [
        ([270.0, 273.0, 267.0], "holds"),  # 10 % better, the spread 1 %
        ([330.0, 333.0, 327.0], "fails"),  # 10 % worse
        ([299.0, 304.0, 296.0], "within noise"),  # 0.1 % apart
    ],
)
def test_a_gap_reaches_its_verdict_by_its_size_against_the_seed_spread(tmp_path, moneta, status):
    t = table()
    write_values(tmp_path, t, {"gated_deltanet-340m": BASE, "moneta-340m": moneta, "transformer-340m": BASE})
    found, _ = verdict(tmp_path, t)
    assert found.status == status
    assert "moneta vs gated_deltanet" in found.detail and "p = " in found.detail


def test_single_seed_rows_without_pooled_noise_are_one_seed_however_wide_the_gap(tmp_path):
    t = table(seeds=(0,))
    write_values(tmp_path, t, {"gated_deltanet-340m": [300.0], "moneta-340m": [150.0], "transformer-340m": [310.0]})
    found, _ = verdict(tmp_path, t)
    assert found.status == "one seed" and "no noise estimate" in found.detail


def test_single_seed_rows_borrow_the_pooled_spread_of_their_group(tmp_path):
    """The claim's two rows have one seed each; Transformer++'s three seeds give the group a 1 % spread."""
    t = table(single=("gated_deltanet-340m", "moneta-340m"))
    wide = {"gated_deltanet-340m": [300.0], "moneta-340m": [270.0], "transformer-340m": BASE}
    write_values(tmp_path / "wide", t, wide)
    narrow = {**wide, "moneta-340m": [298.0]}
    write_values(tmp_path / "narrow", t, narrow)
    assert verdict(tmp_path / "wide", t)[0].status == "holds"
    assert verdict(tmp_path / "narrow", t)[0].status == "within noise"


def test_the_pair_test_is_welchs_t_test_between_seeded_rows_and_pools_relative_spreads():
    a, b = [300.0, 303.0, 297.0, 301.0], [296.0, 292.0, 299.0]
    expected = ttest_ind(a, b, equal_var=False).pvalue
    assert noise.p_value(noise.spread(a, None), noise.spread(b, None)) == pytest.approx(expected)
    r, df = noise.pooled_relative_sd([a, b, [5.0]])
    assert df == 5
    assert r**2 == pytest.approx((3 * (noise.sample_sd(a) / 300.25) ** 2 + 2 * (noise.sample_sd(b) / 295.67) ** 2) / 5,
                                 rel=1e-4)  # fmt: skip
    lone = noise.spread([200.0], (r, df))
    assert lone.pooled and lone.sd == pytest.approx(200 * r) and lone.df == 5
    assert noise.compare(noise.spread([1.0], None), noise.spread(a, None), True) == "one seed"


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
    assert "Seed spread (pooled relative standard deviation over seeds): Val ppl " in md
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


@pytest.mark.parametrize(
    ("moneta_16k", "status"), [(300.0, "holds"), (384.0, "within noise"), (420.0, "fails")]
)  # fmt: skip
def test_a_slope_claim_compares_the_relative_drops_beyond_their_noise(tmp_path, moneta_16k, status):
    """Transformer++ falls 5 % from 2K to 16K; Moneta 25 %, 4 % or -5 %, each run with a 1 % seed spread."""
    t = slope_table()
    spread = (1.0, 1.01, 0.99)
    write_values(tmp_path, t, {"moneta-2k": [400.0 * j for j in spread], "moneta-16k": [moneta_16k * j for j in spread],
                               "transformer-2k": [400.0 * j for j in spread],
                               "transformer-16k": [380.0 * j for j in spread]})  # fmt: skip
    found, _ = verdict(tmp_path, t)
    assert found.status == status
    assert f"drops of {100 * (1 - moneta_16k / 400):.1f} % and 5.0 %" in found.detail


def test_the_drop_of_two_rows_carries_their_noise_by_the_delta_method():
    start, end = noise.spread([400.0, 404.0, 396.0], None), noise.spread([300.0], (0.01, 4))
    found = noise.drop(start, end)
    assert found.mean == pytest.approx(0.25) and found.pooled
    assert found.sd == pytest.approx(0.75 * (0.01**2 + (4 / 400) ** 2 / 3) ** 0.5)
    assert noise.drop(start, noise.spread([300.0], None)).sd is None
