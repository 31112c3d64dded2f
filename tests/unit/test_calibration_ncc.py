"""The ``ncc`` calibrator: monotone maps with pinned ends, the horizon guard, the controller on a mis-scaled
stream, persistence, scenario refusal, the network's training and the engine's wiring of its artefact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from aetheris_ray.calibration import KNOTS, REP_HORIZONS, CalibrationConfig, Calibrator
from aetheris_ray.components.ncc import FittedNcc, NccCalibrator, NeuralConformalCalibration
from aetheris_ray.components.ncc.component import ANCHORS, N_FEATURES, adjust_map, horizon_guard, training_windows
from aetheris_ray.errors import InvalidInput, ModelNotFound

DAY0 = 19000
#: Outcomes (daily h-day pairs) after which the controller holds the 80 % coverage of a model whose
#: volatility is 0.7x the truth within 3 points of nominal (pooled over seeds), at 1 and 14 days.
RECOVERY_OUTCOMES = 90


def mis_scaled_pits(n_days: int, horizons, scale: float = 0.7, seed: int = 0) -> dict[int, np.ndarray]:
    """Raw PITs of overlapping h-day outcomes of a Normal random walk under a model with ``scale`` x its sigma."""
    rng = np.random.default_rng(seed)
    cs = np.concatenate([[0.0], np.cumsum(rng.standard_normal(n_days + max(horizons) + 1))])
    start = np.arange(n_days) + 1
    return {h: norm.cdf((cs[start + h] - cs[start]) / (scale * np.sqrt(h))) for h in horizons}


def replay(cal: Calibrator, pits: dict[int, np.ndarray], codes: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """The walk-forward's calibration pass, day by day: each pair calibrated by the map in force at its origin."""
    hs = sorted(pits)
    n = pits[hs[0]].size
    codes = np.ones(n, dtype=int) if codes is None else codes
    for h in hs:
        cal.add(DAY0 + np.arange(n), h, codes, pits[h])
    need = list(range(int(np.searchsorted(REP_HORIZONS, max(hs))) + 1))
    inside = {h: np.zeros(n, dtype=bool) for h in hs}
    for t in range(n):
        lm = cal.level_map(int(codes[t]), DAY0 + t, buckets=need, version="replay")
        for h in hs:
            c = float(lm.calibrated_prob(h - 1, pits[h][t]))
            cal.assign_calibrated(DAY0 + t, h, c)
            inside[h][t] = 0.1 <= c <= 0.9
    return inside


def ncc(**kw) -> NccCalibrator:
    return NeuralConformalCalibration(**kw).build(CalibrationConfig(), "TEST-USD", "m1")


def trained_like_artefact(seed: int = 3) -> FittedNcc:
    """A seeded artefact with a non-zero output layer (so the network does move the map)."""
    art = FittedNcc.from_params(seed=seed)
    rng = np.random.default_rng(seed)
    shared = dict(art.shared)
    shared["w.2.weight"] = rng.normal(0.0, 0.5, shared["w.2.weight"].shape)
    shared["w.2.bias"] = rng.normal(0.0, 0.2, shared["w.2.bias"].shape)
    return FittedNcc(spec=art.spec, params={}, shared=shared)


def filled(cal: NccCalibrator, n: int = 300, seed: int = 0) -> NccCalibrator:
    rng = np.random.default_rng(seed)
    for h in (1, 3, 7, 14):
        raw = np.clip(rng.random(n) ** 1.4, 1e-4, 1 - 1e-4)
        cal.add(DAY0 + np.arange(n), h, rng.integers(0, 4, n), raw, np.clip(raw + rng.normal(0, 0.1, n), 0, 1))
    return cal


# -- the map ---------------------------------------------------------------------------------------


def test_adjust_map_is_monotone_pinned_and_keeps_the_median():
    rng = np.random.default_rng(0)
    base = np.sort(rng.random((3, KNOTS.size)), axis=1)
    base = 0.5 * (base + 1.0 - base[:, ::-1])  # symmetric, like the conformal map
    base[:, 0], base[:, -1] = 0.0, 1.0
    d = rng.normal(0.0, 0.8, (3, ANCHORS.size))
    out = adjust_map(base, d, 1e-3)
    assert np.all(np.diff(out, axis=1) > 0)
    np.testing.assert_array_equal(out[:, [0, -1]], [[0.0, 1.0]] * 3)
    mid = int(np.argmin(np.abs(KNOTS - 0.5)))
    np.testing.assert_allclose(out[:, mid], 0.5, atol=1e-12)
    np.testing.assert_allclose(out + out[:, ::-1], 1.0, atol=1e-12)  # a symmetric map stays symmetric
    wider = adjust_map(KNOTS[None, :], np.full((1, 4), 0.3), 1e-3)[0]
    upper = (KNOTS > 0.5) & (KNOTS < 1)
    assert np.all(wider[upper] > KNOTS[upper])  # d > 0 widens every upper level


@pytest.mark.parametrize("with_network", [False, True])
def test_level_maps_are_monotone_pinned_with_the_median_fixed(with_network):
    cal = filled(ncc() if not with_network else
                 NeuralConformalCalibration().build(CalibrationConfig(), "T", "m", artefact=trained_like_artefact()))
    for regime in ("calm", "normal", "volatile", "crisis"):
        lm = cal.level_map(regime, DAY0 + 320)
        for step in range(14):
            t = lm.table(step)
            assert np.all(np.diff(t) > 0) and t[0] == 0.0 and t[-1] == 1.0
            assert lm.raw_levels(step, [0.5])[0] == pytest.approx(0.5, abs=1e-9)
            p = np.array([0.01, 0.3, 0.77])
            np.testing.assert_allclose(lm.calibrated_prob(step, lm.raw_levels(step, p)), p, atol=1e-9)


def test_the_network_moves_the_map_and_an_untrained_one_does_not():
    plain = filled(ncc())
    untrained = filled(NeuralConformalCalibration().build(CalibrationConfig(), "TEST-USD", "m1",
                                                          artefact=FittedNcc.from_params(seed=0)))
    trained = filled(NeuralConformalCalibration().build(CalibrationConfig(), "TEST-USD", "m1",
                                                        artefact=trained_like_artefact()))
    a, b, c = (x.level_map("normal", DAY0 + 320).maps for x in (plain, untrained, trained))
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert np.max(np.abs(a - c)) > 1e-3
    assert plain.version != trained.version


def test_horizon_guard_keeps_the_calibrated_cone_widening():
    # bucket 0 (1 day) much wider than bucket 3 (14 days): without the guard the cone narrows
    maps = np.tile(KNOTS, (6, 1))
    x = np.log(KNOTS[1:-1] / (1 - KNOTS[1:-1]))
    maps[0, 1:-1] = 1.0 / (1.0 + np.exp(-2.5 * x))
    g = horizon_guard(maps[:4])
    assert np.all(np.diff(g[:, KNOTS > 0.5], axis=0) >= -1e-15)
    assert np.all(np.diff(g[:, KNOTS < 0.5], axis=0) <= 1e-15)
    assert np.all(np.diff(g, axis=1) >= 0)
    # the calibrated quantiles of a widening raw cone (sqrt-h Normal) then widen at every step
    from aetheris_ray.calibration import ConformalLevelMap

    raw_q = lambda step, u: np.sqrt(step + 1.0) * norm.ppf(np.clip(u, 1e-12, 1 - 1e-12))  # noqa: E731
    levels = np.array([0.05, 0.1, 0.25, 0.75, 0.9, 0.95])
    guarded = np.tile(KNOTS, (6, 1))
    guarded[:4] = g
    for m, should in ((maps, False), (guarded, True)):
        lm = ConformalLevelMap(m, "t")
        width = np.array([raw_q(s, lm.raw_levels(s, levels[::-1])) - raw_q(s, lm.raw_levels(s, levels))
                          for s in range(14)])[:, :3]
        assert bool(np.all(np.diff(width, axis=0) >= -1e-12)) is should


def test_ncc_maps_widen_with_the_bucket():
    cal = filled(ncc())
    m = cal.level_map("volatile", DAY0 + 320).maps
    assert np.all(np.diff(m[:, KNOTS > 0.5], axis=0) >= -1e-12)


# -- the controller --------------------------------------------------------------------------------


def test_controller_recovers_target_coverage_on_a_mis_scaled_model():
    """Volatility x0.7: after RECOVERY_OUTCOMES daily outcomes, 80 % coverage within 3 points (1 and 14 days)."""
    hs = (1, 3, 7, 14)
    cov = {"conformal": {h: [] for h in hs}, "ncc": {h: [] for h in hs}}
    for seed in range(4):
        pits = mis_scaled_pits(365, hs, seed=seed)
        for name, cal in (("conformal", Calibrator(CalibrationConfig())), ("ncc", ncc())):
            inside = replay(cal, pits)
            for h in hs:
                cov[name][h].append(inside[h][RECOVERY_OUTCOMES:])
    for h in hs:
        got = float(np.mean(cov["ncc"][h]))
        base = float(np.mean(cov["conformal"][h]))
        assert abs(got - 0.8) <= 0.03, (h, got)
        assert abs(got - 0.8) <= abs(base - 0.8) + 0.005, (h, got, base)
    assert float(np.mean(cov["conformal"][14])) < 0.75  # the baseline layer has not recovered at 14 days


def test_controller_leaves_a_calibrated_model_near_target():
    pits = mis_scaled_pits(365, (1, 7), scale=1.0, seed=11)
    inside = replay(ncc(), pits)
    assert abs(float(np.mean(inside[1][60:])) - 0.8) < 0.04
    assert abs(float(np.mean(inside[7][60:])) - 0.8) < 0.06


def test_controller_is_point_in_time():
    cal = filled(ncc())
    before = cal.level_map("normal", DAY0 + 300).maps
    more = cal.with_pairs(DAY0 + np.arange(300, 360), 1, "normal", np.full(60, 0.999), np.full(60, 0.999))
    np.testing.assert_array_equal(more.level_map("normal", DAY0 + 300).maps, before)  # not realised yet
    assert not np.array_equal(more.level_map("normal", DAY0 + 362).maps, cal.level_map("normal", DAY0 + 362).maps)


# -- state, refusals -------------------------------------------------------------------------------


def test_save_load_round_trip_keeps_buffers_settings_and_network(tmp_path):
    spec = NeuralConformalCalibration(kp=0.7, ki=0.05, horizon_guard=False)
    cal = filled(spec.build(CalibrationConfig(window_days=200), "TEST-USD", "m1", artefact=trained_like_artefact()))
    back = spec.load(cal.save(tmp_path / "cal.json"))
    assert isinstance(back, NccCalibrator) and back.spec == spec and back.version == cal.version
    np.testing.assert_array_equal(back.level_map("crisis", DAY0 + 310).maps, cal.level_map("crisis", DAY0 + 310).maps)
    kept = back.with_pairs([DAY0 + 400], [1], ["calm"], [0.4], [0.4])
    assert isinstance(kept, NccCalibrator) and kept.artefact is back.artefact and len(kept) == len(cal) + 1


def test_artefact_save_load_and_corruption(tmp_path):
    from aetheris_ray.components import load_component

    art = trained_like_artefact()
    back = load_component(art.save(tmp_path / "a"))
    assert isinstance(back, FittedNcc)
    feats = np.random.default_rng(0).normal(size=(5, N_FEATURES))
    np.testing.assert_array_equal(back.adjustments(feats), art.adjustments(feats))
    bad = FittedNcc(spec=art.spec, params={}, shared={**art.shared, "w.2.bias": np.zeros(3)})
    with pytest.raises(ModelNotFound, match="wrong shapes"):
        bad.check_loaded()


def test_scenario_forecasts_never_feed_it():
    class Scenario:
        conditional = True

    with pytest.raises(InvalidInput, match="scenario"):
        ncc().record(Scenario(), 100.0)


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInput, match="pid_max"):
        NeuralConformalCalibration(pid_max=0.0)
    with pytest.raises(InvalidInput, match="features"):
        NeuralConformalCalibration().build(CalibrationConfig(), "T", "m", artefact=FittedNcc(
            spec=NeuralConformalCalibration(), params={},
            shared={**FittedNcc.from_params().shared, "feat_mean": np.zeros(3)}))


# -- training and the engine's wiring ---------------------------------------------------------------


def regime_stream_calibrator(seed: int, n: int = 500) -> Calibrator:
    """A baseline calibrator whose raw model is too narrow in crisis and too wide in calm (regime-dependent)."""
    rng = np.random.default_rng(seed)
    codes = np.repeat(rng.integers(0, 4, n // 20 + 1), 20)[:n]
    scale = np.array([1.3, 1.0, 0.85, 0.6])[codes]
    cal = Calibrator(CalibrationConfig(n0_regime=400.0))
    for h in (1, 3):
        pits = mis_scaled_pits(n, (h,), seed=seed + 10 * h)[h]
        pits = norm.cdf(norm.ppf(pits) * 0.7 / scale)
        cal.add(DAY0 + np.arange(n), h, codes, pits)
    return cal


def test_training_windows_are_point_in_time():
    cal = regime_stream_calibrator(0, 200)
    w = training_windows([cal], recent_days=60)
    assert w["feats"].shape == (w["raw"].size, N_FEATURES) and w["u0"].shape == (w["raw"].size, 8)
    assert np.all(np.diff(w["u0"], axis=1) > 0)
    first = w["day"] == DAY0
    np.testing.assert_array_equal(w["feats"][first][:, -7:], 0.0)  # nothing realised before the first origin
    late = training_windows([cal], start=DAY0 + 150)
    assert late["day"].min() >= DAY0 + 150


@pytest.mark.torch
def test_trainer_learns_regime_dependent_adjustments(tmp_path):
    pytest.importorskip("torch")
    import torch

    torch.set_num_threads(1)
    w = NeuralConformalCalibration.training_windows([regime_stream_calibrator(s, 400) for s in range(2)])
    spec = NeuralConformalCalibration(max_steps=100, lr=1e-2, val_fraction=0.3)
    tr = spec.trainer(w)
    m0 = tr.evaluate()
    tr.train(100)
    m1 = tr.evaluate()
    assert m0["val_ql"] == pytest.approx(m0["val_ql_base"])  # zero output layer: no adjustment yet
    assert m1["val_ql"] < m1["val_ql_base"]
    state = tr.state_dict()
    again = spec.trainer(w)
    again.load_state_dict(state)
    assert again.step == 100 and again.evaluate()["val_ql"] == pytest.approx(m1["val_ql"])
    art = tr.fitted()
    assert art.info["metrics"]["val_ql"] <= m1["val_ql"] + 1e-12  # the best validation checkpoint
    assert tr.score(art)["val_ql"] == pytest.approx(art.info["metrics"]["val_ql"], rel=1e-5)
    assert tr.score(tr.fitted())["val_ql"] <= m1["val_ql_base"]  # the numpy forward = torch's (above)
    assert tr.score(FittedNcc.from_params())["val_ql"] == pytest.approx(m1["val_ql_base"], rel=1e-9)
    with pytest.raises(InvalidInput, match="calibration pairs"):
        spec.trainer({"x_ret": np.zeros((3, 4))})


def test_engine_resolves_the_registered_artefact_or_falls_back():
    from aetheris_ray.errors import FallbackWarning
    from aetheris_ray.model import EngineConfig, build_calibrator, resolve_config, with_components
    from aetheris_ray.registry import Registry

    cfg = with_components(EngineConfig(), ["calibrator=ncc"])
    with pytest.warns(FallbackWarning):
        fell = resolve_config(cfg)  # nothing registered in the test's AETHERIS_HOME
    assert fell.calibrator.name == "conformal" and fell.fallbacks[0].kind == "calibrator"
    assert type(build_calibrator(fell, "BTC-USD")) is Calibrator
    rec = Registry().register(trained_like_artefact())
    res = resolve_config(cfg)
    assert res.calibrator.version == rec.version and f"+calibrator=ncc@{rec.version}" in res.version
    cal = build_calibrator(res, "BTC-USD")
    assert isinstance(cal, NccCalibrator) and cal.artefact is not None


def test_walk_forward_with_the_ncc_calibrator():
    """``--component calibrator=ncc``: the walk-forward's calibration pass runs through the ncc maps."""
    import pandas as pd

    from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
    from aetheris_ray.model import ComponentChoice, EngineConfig, with_components
    from aetheris_ray.registry import Registry
    from aetheris_ray.walkforward import walk_forward

    Registry().register(trained_like_artefact())
    rng = np.random.default_rng(4)
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(0.03 * rng.standard_t(5, 420) * np.sqrt(3 / 5))]))
    dates = pd.date_range("2020-01-01", periods=close.size, freq="D")
    data = AssetData(asset="SYN-USD", bars={"1D": pd.DataFrame({
        "ts": bar_ts_from_dates(dates), "open": close, "high": close, "low": close, "close": close,
        "volume": np.nan})})
    fast = EngineConfig(volatility=ComponentChoice(name="ewma"), refit_every=28, walkforward_paths=200,
                        calibration=CalibrationConfig(window_days=60, coverage_days=60))
    origins = data.daily_close().index[380:400]
    res = walk_forward(data, origins, [1, 7], config=with_components(fast, ["calibrator=ncc"]), seed=1)
    assert isinstance(res.calibrator, NccCalibrator) and res.calibrator.artefact is not None
    q = res.quantiles
    assert np.all(np.isfinite(q)) and np.all(np.diff(q, axis=2) >= 0)
    assert not np.allclose(res.calibrator.pairs()["cal_pit"], res.calibrator.pairs()["raw_pit"])


@pytest.mark.torch
def test_walk_forward_windows_train_before_end():
    pytest.importorskip("torch")
    import pandas as pd

    from aetheris_ray.components.ncc.component import walk_forward_windows
    from aetheris_ray.data.schema import AssetData, bar_ts_from_dates
    from aetheris_ray.model import ComponentChoice, EngineConfig

    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(0.02 * rng.standard_normal(200))]))
    dates = pd.date_range("2020-01-01", periods=close.size, freq="D")
    data = AssetData(asset="SYN-USD", bars={"1D": pd.DataFrame({
        "ts": bar_ts_from_dates(dates), "open": close, "high": close, "low": close, "close": close,
        "volume": np.nan})})
    fast = EngineConfig(volatility=ComponentChoice(name="ewma"), refit_every=28,
                        calibration=CalibrationConfig(window_days=30, coverage_days=30))
    w = walk_forward_windows([data], end="2020-06-01", start="2020-04-01", config=fast, n_paths=100)
    from aetheris_ray.calibration import day_number

    assert w["raw"].size > 100 and w["day"].min() >= day_number("2020-04-01")
    assert np.all(w["day"] + np.asarray(REP_HORIZONS)[w["bucket"]] < day_number("2020-06-01"))
    assert np.all(np.isfinite(w["scale"]) & (w["scale"] > 0))  # the raw 10-90 % width weights the loss
    tr = NeuralConformalCalibration(val_fraction=0.3).trainer(w)
    wt = tr.train_t["wt"].numpy()
    assert wt.mean() == pytest.approx(1.0, rel=1e-5) and wt.std() > 0
