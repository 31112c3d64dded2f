"""Block-bootstrap standard errors of pooled backtest figures, and their place in the report and CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aetheris_ray.cli import main
from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation.backtest import SourceSpec, backtest
from aetheris_ray.evaluation.baselines import EwmaNormal, baseline_models
from aetheris_ray.evaluation.uncertainty import block_bootstrap, default_block_days
from evalkit import LEVELS

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")
COLS = ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]


def _frame(y: np.ndarray, scale: float, model: str = "m", asset: str = "AAA-USD", horizon: int = 1,
           start: str = "2020-01-01") -> pd.DataFrame:
    """One row per day: Normal(0, scale) quantiles around a spot of 100, outcome ``y``."""
    origins = pd.date_range(start, periods=len(y), freq="D").strftime("%Y-%m-%d")
    q = 100.0 * np.exp(scale * stats.norm.ppf(LEVELS))
    f = pd.DataFrame(np.tile(q, (len(y), 1)), columns=COLS)
    f.insert(0, "model", model)
    f.insert(1, "asset", asset)
    f.insert(2, "origin", origins)
    f.insert(3, "horizon", horizon)
    f["y"] = y
    f["spot"] = 100.0
    return f


def _row(u: pd.DataFrame, model: str = "m", horizon: int = 1) -> pd.Series:
    return u[(u.model == model) & (u.horizon == horizon)].iloc[0]


def test_independent_outcomes_give_the_binomial_standard_error():
    n = 4000
    y = np.random.default_rng(1).standard_normal(n)
    u = block_bootstrap(_frame(y, 1.0), LEVELS, block_days=1, resamples=2000)
    r = _row(u)
    for p in ("0.50", "0.80", "0.90"):
        cov = r[f"coverage[{p}]"]
        assert abs(cov - float(p)) < 4 * np.sqrt(float(p) * (1 - float(p)) / n)
        assert r[f"coverage_se[{p}]"] == pytest.approx(np.sqrt(cov * (1 - cov) / n), rel=0.12)


@pytest.mark.slow
def test_assets_that_move_together_do_not_shrink_the_standard_error():
    """Ten copies of one asset's outcomes carry the information of one: the SE stays put (a binomial
    SE would fall by sqrt(10))."""
    y = np.random.default_rng(2).standard_normal(730)
    one = _row(block_bootstrap(_frame(y, 1.0), LEVELS, block_days=28))
    ten = _row(block_bootstrap(pd.concat([_frame(y, 1.0, asset=f"A{i}-USD") for i in range(10)]), LEVELS,
                               block_days=28))
    assert ten["n"] == 10 * one["n"]
    assert ten["coverage[0.50]"] == pytest.approx(one["coverage[0.50]"])
    assert ten["coverage_se[0.50]"] == pytest.approx(one["coverage_se[0.50]"], rel=1e-9)
    assert ten["ql_se"] == pytest.approx(one["ql_se"], rel=1e-9)


@pytest.mark.slow
def test_overlapping_targets_widen_the_standard_error():
    """14-day sums of daily shocks overlap: blocks longer than the overlap see it, 1-day blocks do not."""
    shocks = np.random.default_rng(3).standard_normal(1500 + 13)
    y = np.convolve(shocks, np.ones(14), "valid")[:1500]
    f = _frame(y, np.sqrt(14), horizon=14)
    short = _row(block_bootstrap(f, LEVELS, block_days=1), horizon=14)
    long = _row(block_bootstrap(f, LEVELS), horizon=14)
    assert long["block_days"] == default_block_days([14]) == 28
    assert long["coverage_se[0.50]"] > 1.5 * short["coverage_se[0.50]"]


@pytest.mark.slow
def test_point_figures_equal_the_pooled_table(data_dir):
    res = backtest(SourceSpec(data=str(data_dir)), "all", "2022-03-01", "2022-09-30", [1, 7], baseline_models(),
                   progress=False, workers=1)
    u = res.uncertainty(resamples=200)
    pooled = res.pooled(scaled=False)
    merged = pooled.merge(u, on=["model", "horizon"], suffixes=("", "_boot"))
    assert len(merged) == len(pooled) == 6
    for c in ("ql", "coverage[0.50]", "coverage[0.80]", "coverage[0.90]"):
        np.testing.assert_allclose(merged[c + "_boot"], merged[c], rtol=1e-12)
    np.testing.assert_array_equal(merged["n_boot"], merged["n"])  # stablecoin out, common origins only
    assert u["best_baseline"].isna().all()  # baselines only: no ratios
    md = res.report(bootstrap=200)
    assert "## Sampling uncertainty (block bootstrap)" in md and "Only 7 blocks" in md
    assert "## Sampling uncertainty" not in res.report(bootstrap=0)


def test_ratios_to_the_best_baseline_are_paired():
    rng = np.random.default_rng(4)
    y = rng.standard_normal(1000)
    frames = [_frame(y, 1.0, "true"), _frame(y, 1.0, "copy"), _frame(y, 2.0, "wide"), _frame(y, 1.6, "wider")]
    u = block_bootstrap(pd.concat(frames), LEVELS, baselines=["wide", "wider"])
    copy, true = _row(u, "copy"), _row(u, "true")
    assert true["best_baseline"] == "wider"
    assert true["ql_ratio"] < 1 and true["ratio_hi"] < 1 and true["p_lower"] == 1.0
    assert copy["ql_ratio"] == pytest.approx(true["ql_ratio"]) and copy["ratio_lo"] == pytest.approx(true["ratio_lo"])
    same = block_bootstrap(pd.concat([_frame(y, 1.0, "eng"), _frame(y, 1.0, "base")]), LEVELS, baselines=["base"])
    r = _row(same, "eng")
    assert r["ql_ratio"] == r["ratio_lo"] == r["ratio_hi"] == 1.0 and r["p_lower"] == 0.0
    assert np.isnan(_row(u, "wide")["ql_ratio"])


def test_seeded_and_reproducible():
    f = _frame(np.random.default_rng(5).standard_normal(500), 1.0)
    a, b = block_bootstrap(f, LEVELS, seed=3), block_bootstrap(f, LEVELS, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert block_bootstrap(f, LEVELS, seed=4)["ql_se"].iloc[0] != a["ql_se"].iloc[0]


def test_common_origins_and_gaps():
    """A model missing an origin drops it for every model; a gap of months leaves its blocks empty."""
    y = np.random.default_rng(6).standard_normal(400)
    a, b = _frame(y, 1.0, "a"), _frame(y, 1.2, "b")
    b = b.drop(index=[5, 6])
    gap = ~pd.to_datetime(a["origin"]).between("2020-04-01", "2020-09-30")
    u = block_bootstrap(pd.concat([a[gap], b]), LEVELS)
    assert (u["n"] == gap.sum() - 2).all()
    assert np.isfinite(u["coverage_se[0.50]"]).all()
    assert block_bootstrap(a.iloc[:0], LEVELS).empty


@pytest.mark.slow
def test_a_period_shorter_than_two_blocks_gets_no_standard_error(data_dir):
    y = np.random.default_rng(7).standard_normal(40)
    u = block_bootstrap(pd.concat([_frame(y, 1.0, "eng"), _frame(y, 1.2, "base")]), LEVELS, baselines=["base"])
    r = _row(u, "eng")
    assert r["blocks"] == 1 and np.isnan(r["coverage_se[0.50]"]) and np.isnan(r["ql_se"])
    assert r["ql_ratio"] < 1 and np.isnan(r["ratio_lo"]) and np.isnan(r["p_lower"])
    wide = EwmaNormal(name="engine", lam=0.97)
    res = backtest(SourceSpec(data=str(data_dir)), ["AAA-USD"], "2022-03-01", "2022-04-15", [1],
                   [wide, *baseline_models()], progress=False, workers=1)
    md = res.report(bootstrap=100)
    assert "too short for standard errors" in md and "nan" not in md
    assert "| engine | 1 | " in md.split("QL ratio to the best baseline")[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(resamples=50), "bootstrap resamples 50: use at least 100"),
    (dict(block_days=0), "bootstrap block of 0 days"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        block_bootstrap(_frame(np.zeros(60), 1.0), LEVELS, **kwargs)


@pytest.mark.slow
def test_cli_prints_intervals_and_rejects_too_few_resamples(capsys, data_dir, tmp_path):
    base = ["backtest", "--data", str(data_dir), "--assets", "AAA-USD", "--start", "2022-03-01", "--end",
            "2022-09-30", "--horizons", "1", "--model", "none", "--baselines", "--no-progress", "--workers", "1"]
    assert main([*base, "--bootstrap", "50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --bootstrap 50: give at least 100 resamples") and err.count("\n") == 1
    report = tmp_path / "r.md"
    assert main([*base, "--bootstrap", "200", "--report", str(report)]) == 0
    assert "| model | h | blocks | QL x100 | se | cov50 % | se |" in report.read_text()
