"""The walk-forward harness: protocol, gaps, unscored assets, export, exact re-scoring, look-ahead, workers."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.errors import DataQualityWarning, InvalidInput, UnknownAsset
from aetheris_ray.evaluation.aggregate import merge_all
from aetheris_ray.evaluation.backtest import (
    SourceSpec,
    backtest,
    finish_asset,
    origin_blocks,
    run_asset,
    run_block,
)
from aetheris_ray.evaluation.baselines import Bootstrap, EwmaNormal, baseline_models
from aetheris_ray.evaluation.report import (
    per_asset_table,
    pooled_metrics,
    pooled_table,
    read_export,
    render_report,
    score_export,
)
from evalkit import LEVELS, write_daily

START, END, HORIZONS = "2022-03-01", "2022-09-30", (1, 7)

# the CSV connector notes the gaps of GAP-USD once per read; test_gap_inside_the_period checks the note
pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")


@pytest.fixture(scope="module")
def result(data_dir):
    return backtest(SourceSpec(data=str(data_dir)), "all", START, END, HORIZONS, baseline_models(), progress=False,
                    workers=1)


def _closes(data_dir, asset):
    df = pd.read_csv(data_dir / "daily" / f"{asset}.csv", parse_dates=["date"])
    return df.set_index("date")["close"]


@pytest.mark.slow
def test_export_columns_exactly(result):
    ex = result.export()
    assert list(ex.columns) == ["model", "asset", "origin", "horizon", "q05", "q10", "q25", "q50", "q75", "q90",
                                "q95", "y"]
    assert ex["origin"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert (ex[["q05", "q95"]].to_numpy() > 0).all()
    assert (np.diff(ex[["q05", "q10", "q25", "q50", "q75", "q90", "q95"]].to_numpy(), axis=1) >= 0).all()


@pytest.mark.slow
def test_targets_and_origins_follow_the_protocol(result, data_dir):
    ex = result.export()
    for asset in ("AAA-USD", "GAP-USD"):
        close = _closes(data_dir, asset)
        for h in HORIZONS:
            rows = ex[(ex.asset == asset) & (ex.horizon == h) & (ex.model == "ewma_normal")]
            o = pd.to_datetime(rows["origin"])
            assert o.min() >= pd.Timestamp(START) and o.max() <= pd.Timestamp(END) - pd.Timedelta(days=h)
            t = o + pd.Timedelta(days=h)
            np.testing.assert_array_equal(rows["y"], np.log(close.reindex(t).to_numpy() / close.reindex(o).to_numpy()))
            # the median of a zero-drift model is the origin close
            np.testing.assert_allclose(rows["q50"], close.reindex(o).to_numpy(), rtol=1e-15)
    # every calendar day with a close at both ends is an origin of AAA (no gap, long history)
    n_days = (pd.Timestamp(END) - pd.Timedelta(days=7) - pd.Timestamp(START)).days + 1
    aaa = result.counts[(result.counts.asset == "AAA-USD") & (result.counts.horizon == 7)]
    assert (aaa["calendar_days"] == n_days).all() and (aaa["scored"] == n_days).all()
    assert (aaa["no_close"] == 0).all() and (aaa["model_skipped"] == 0).all()


@pytest.mark.slow
def test_gap_asset_skips_and_continues(result):
    """GAP-USD has no closes 2020-03-01 .. 2022-02-28: it still runs; short-history origins are skipped."""
    c = result.counts[result.counts.asset == "GAP-USD"].set_index(["horizon", "model"])
    assert (c["no_close"] == 0).all()  # the hole ends before START
    assert c.loc[(1, "bootstrap"), "model_skipped"] > 0  # the window right after the hole is too thin
    assert c.loc[(1, "ewma_normal"), "model_skipped"] == 0
    assert (c["scored"] > 0).all() and "GAP-USD" not in result.unscored
    # scored = origins every model forecast: the same number for every model
    assert c.groupby("horizon")["scored"].nunique().eq(1).all()


def test_gap_inside_the_period(tmp_path, data_dir):
    """A hole inside the period: its origins are counted as no_close; the run goes on."""
    src = _closes(data_dir, "AAA-USD")
    write_daily(tmp_path, "HOLE-USD", src[(src.index < "2022-05-01") | (src.index > "2022-06-30")])
    with pytest.warns(DataQualityWarning, match="gap"):
        res = backtest(SourceSpec(data=str(tmp_path)), ["HOLE-USD"], START, END, [1], [EwmaNormal()], progress=False)
    c = res.counts.iloc[0]
    assert c["no_close"] == 61 + 1  # 61 missing origins, and 2022-04-30 whose target is missing
    assert c["scored"] == c["calendar_days"] - c["no_close"]


@pytest.mark.slow
def test_asset_without_scorable_origin_is_reported(result):
    assert set(result.unscored) == {"NEW-USD"}
    assert "too little history" in result.unscored["NEW-USD"]
    c = result.counts[result.counts.asset == "NEW-USD"]
    assert (c["scored"] == 0).all() and (c["scorable"] > 0).all()


def test_asset_outside_the_period_is_reported(data_dir):
    res = backtest(SourceSpec(data=str(data_dir)), ["NEW-USD"], "2021-01-01", "2021-12-31", [1], [EwmaNormal()],
                   progress=False)
    assert res.unscored["NEW-USD"].startswith("no close in [2021-01-01, 2021-12-31]")
    assert res.export().empty and res.pooled().empty


@pytest.mark.slow
def test_stablecoin_left_out_of_pooled(result):
    per = per_asset_table(result.metrics)
    pooled = pooled_table(result.metrics, scaled=False)
    for (m, h), g in pooled.groupby(["model", "horizon"]):
        inc = per[(per.model == m) & (per.horizon == h) & ~per.excluded]
        assert g["n"].item() == inc["n"].sum()
    assert per.loc[per.asset == "USDT-USD", "excluded"].all() and (per.loc[per.asset == "USDT-USD", "n"] > 0).all()


@pytest.mark.slow
def test_pooled_is_the_exact_merge(result):
    pm = pooled_metrics(result.metrics)
    for (m, h), ms in pm.items():
        parts = [v for (mm, a, hh), v in result.metrics.items() if mm == m and hh == h and a != "USDT-USD"]
        assert merge_all(parts, LEVELS).get() == ms.get()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.slow
def test_score_export_reproduces_the_run(result, data_dir, tmp_path, suffix):
    path = result.write(tmp_path / f"forecasts{suffix}")
    again = score_export(read_export(path), SourceSpec(data=str(data_dir)))
    assert set(again) == set(result.metrics)
    for k, ms in result.metrics.items():
        np.testing.assert_equal(again[k].get(), ms.get(), err_msg=str(k))  # bitwise (NaN == NaN when empty)
    assert render_report(again, models=result.models) == render_report(result.metrics, models=result.models)


@pytest.mark.slow
def test_workers_equal_in_process(result, data_dir):
    res2 = backtest(SourceSpec(data=str(data_dir)), "all", START, END, HORIZONS, baseline_models(), progress=False,
                    workers=2)
    pd.testing.assert_frame_equal(res2.export(), result.export())
    np.testing.assert_equal({k: v.get() for k, v in res2.metrics.items()},
                            {k: v.get() for k, v in result.metrics.items()})


@pytest.mark.slow
def test_run_asset_is_the_unit(result, data_dir):
    run = run_asset(SourceSpec(data=str(data_dir)), "AAA-USD", pd.Timestamp(START), pd.Timestamp(END), HORIZONS,
                    baseline_models(), LEVELS)
    np.testing.assert_equal({k: v.get() for k, v in run.metrics.items()},
                            {k: v.get() for k, v in result.metrics.items() if k[1] == "AAA-USD"})
    assert run.note == ""


def _small_engine():
    from aetheris_ray.calibration import CalibrationConfig
    from aetheris_ray.model import EngineConfig
    from aetheris_ray.walkforward import EngineModel

    cfg = EngineConfig(refit_every=14, walkforward_paths=200, calibration=CalibrationConfig(window_days=60))
    return EngineModel(cfg, seed=3)


@pytest.mark.parametrize("asset", ["AAA-USD", "GAP-USD", "NEW-USD"])
@pytest.mark.slow
def test_blocks_of_origins_merge_to_the_one_block_run(data_dir, asset):
    """Assets x blocks (what the Ray backtest runs) give the one-block run bitwise, engine and baselines."""
    spec = SourceSpec(data=str(data_dir))
    s, e = pd.Timestamp(START), pd.Timestamp(END)
    models = [_small_engine(), *baseline_models()]
    whole = run_asset(spec, asset, s, e, HORIZONS, models, LEVELS)
    blocks = origin_blocks(s, e, HORIZONS, 45)
    assert len(blocks) == 5
    parts = [run_block(spec, asset, s, e, HORIZONS, models, LEVELS, b) for b in blocks]
    got = finish_asset(spec, asset, s, e, HORIZONS, models, LEVELS, parts)
    pd.testing.assert_frame_equal(got.frame, whole.frame, check_exact=True)
    pd.testing.assert_frame_equal(got.counts, whole.counts, check_exact=True)
    assert got.note == whole.note
    np.testing.assert_equal({k: v.get() for k, v in got.metrics.items()},
                            {k: v.get() for k, v in whole.metrics.items()})
    if asset == "AAA-USD":  # the engine's raw phase really was split: every block simulated origins
        assert set(got.frame["model"]) == {m.name for m in models}
        assert all(p.parts["engine"].days.size > 0 for p in parts)
        assert sum(p.parts["engine"].req.size > 0 for p in parts) >= 4
    with pytest.raises(InvalidInput, match="not the consecutive blocks"):
        finish_asset(spec, asset, s, e, HORIZONS, models, LEVELS, parts[:2] + parts[3:])


def test_origin_blocks():
    t = pd.Timestamp
    # origins 2022-01-01 .. 2022-12-30: edges every 120 days from the start, open at both ends
    assert origin_blocks("2022-01-01", "2022-12-31", [1, 7], 120) == [
        (None, t("2022-05-01")), (t("2022-05-01"), t("2022-08-29")), (t("2022-08-29"), None)]
    # a remainder shorter than half a block (here 4 days) joins the last full block
    assert origin_blocks("2022-01-01", "2022-12-31", [1, 7], 180) == [(None, t("2022-06-30")), (t("2022-06-30"), None)]
    assert origin_blocks("2022-01-01", "2022-12-31", [1], None) == [(None, None)]
    assert origin_blocks("2022-01-01", "2022-12-31", [1], 400) == [(None, None)]
    with pytest.raises(InvalidInput, match="block_days 0 must be a whole number"):
        origin_blocks("2022-01-01", "2022-12-31", [1], 0)


@pytest.mark.slow
def test_harness_look_ahead_guard(tmp_path, data_dir):
    """Altering prices after D: every forecast at an origin before D is identical (bitwise)."""
    d = pd.Timestamp("2022-06-15")
    shutil.copytree(data_dir, tmp_path / "orig")
    close = _closes(data_dir, "AAA-USD")
    rng = np.random.default_rng(0)
    later = close.index >= d
    altered = close.copy()
    altered[later] = altered[later] * np.exp(rng.normal(0, 0.3, later.sum()))
    shutil.copytree(data_dir, tmp_path / "alt")
    write_daily(tmp_path / "alt", "AAA-USD", altered)
    write_daily(tmp_path / "orig", "AAA-USD", close)  # same float formatting for both copies
    runs = [backtest(SourceSpec(data=str(tmp_path / k)), ["AAA-USD"], START, END, HORIZONS, baseline_models(),
                     progress=False).export() for k in ("orig", "alt")]
    qcols = ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]
    a, b = (r[pd.to_datetime(r["origin"]) < d].reset_index(drop=True) for r in runs)
    pd.testing.assert_frame_equal(a[["model", "origin", "horizon", *qcols]], b[["model", "origin", "horizon", *qcols]])
    known = pd.to_datetime(a["origin"]) + pd.to_timedelta(a["horizon"], unit="D") < d
    np.testing.assert_array_equal(a.loc[known, "y"], b.loc[known, "y"])
    after = [r[pd.to_datetime(r["origin"]) >= d] for r in runs]
    assert not np.array_equal(after[0][qcols].to_numpy(), after[1][qcols].to_numpy())


def test_model_failure_on_an_asset_is_counted(data_dir):
    from aetheris_ray.errors import DataError

    class Failing:
        name = "failing"

        def predict(self, data, origins, horizons, levels):
            raise DataError(f"{data.asset}: not enough closes")

    res = backtest(SourceSpec(data=str(data_dir)), ["AAA-USD"], START, END, [1], [Failing(), EwmaNormal()],
                   progress=False)
    assert "failing: AAA-USD: not enough closes" in res.unscored["AAA-USD"]
    assert res.counts.set_index("model").loc["failing", "model_skipped"] == res.counts["scorable"].iloc[0]


def test_bad_model_shape_is_an_error(data_dir):
    class Wrong:
        name = "wrong"

        def predict(self, data, origins, horizons, levels):
            return np.zeros((len(origins), len(horizons)))

    with pytest.raises(InvalidInput, match="model 'wrong' returned shape"):
        backtest(SourceSpec(data=str(data_dir)), ["AAA-USD"], START, END, [1], [Wrong()], progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(start="2022-13-01"), "start '2022-13-01' is not a date"),
    (dict(start="2022-09-30", end="2022-03-01"), "start 2022-09-30 must be before end 2022-03-01"),
    (dict(horizons=[0, 7]), "horizon 0 is not valid"),
    (dict(horizons=[91]), "horizon 91 is not valid"),
    (dict(horizons=["x"]), "horizon 'x' is not valid"),
    (dict(horizons=[1.5]), "horizon 1.5 is not valid"),
    (dict(horizons=[]), "horizons: the list is empty"),
    (dict(end="2022-03-05"), "shorter than the horizon 7 days"),
    (dict(assets="AAA-USD,NOPE-USD"), "unknown asset 'NOPE-USD'"),
    (dict(models=[EwmaNormal(), EwmaNormal()]), "repeated: ewma_normal"),
    (dict(models=[]), "models: none given"),
    (dict(workers=0), "workers 0 must be at least 1"),
])
def test_bad_arguments(data_dir, kwargs, match):
    args = dict(assets="AAA-USD", start=START, end=END, horizons=[1, 7], models=[EwmaNormal(), Bootstrap()],
                progress=False)
    args.update(kwargs)
    with pytest.raises((InvalidInput, UnknownAsset), match=match):
        backtest(SourceSpec(data=str(data_dir)), **args)


@pytest.mark.slow
def test_report_sections(result):
    md = result.report()
    for title in ("## Pooled", "## Against the best baseline", "## Per-quantile hit rates", "## Origins",
                  "## Assets with no scored origin", "## Per asset"):
        assert title in md
    assert "- NEW-USD: no origin forecast by every model" in md
    assert "| QL x100 | cov50 % | cov80 % | cov90 % | width80 x100 |" in md


@pytest.mark.slow
def test_best_baseline_line_with_an_engine(data_dir):
    from aetheris_ray.evaluation.report import best_baseline_lines

    class Wide(EwmaNormal):
        pass

    wide = Wide(name="engine", lam=0.97)
    res = backtest(SourceSpec(data=str(data_dir)), ["AAA-USD"], START, END, [1], [wide, *baseline_models()],
                   progress=False)
    pooled = res.pooled()
    (line,) = best_baseline_lines(pooled)
    best = pooled[pooled.model != "engine"].sort_values("ql").iloc[0]
    eng = pooled[pooled.model == "engine"].iloc[0]
    assert line.startswith(f"h=1: best baseline {best['model']} QL {best['ql']:.3f}; engine QL {eng['ql']:.3f}, "
                           f"ratio {eng['ql'] / best['ql']:.3f}")
