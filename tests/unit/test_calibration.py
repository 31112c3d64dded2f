"""Conformal calibration: buckets, monotone maps with exact inverses, realisation timing, persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from aetheris_ray.calibration import (
    BUCKET_LABELS,
    KNOTS,
    CalibrationConfig,
    Calibrator,
    ConformalLevelMap,
    bucket_index,
    day_number,
    pit,
)
from aetheris_ray.errors import InvalidInput, ModelNotFound

LEVELS = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])


def _miscaled_pairs(n=2000, scale=0.5, seed=0, h=1, start=18000):
    """Raw PITs of a model whose sigma is ``scale`` x the truth (y ~ N(0, 1), model N(0, scale^2))."""
    y = np.random.default_rng(seed).standard_normal(n)
    return np.arange(start, start + n), np.full(n, h), stats.norm.cdf(y / scale)


def test_buckets():
    assert BUCKET_LABELS == ("1", "2-3", "4-7", "8-14", "15-30", "31-90")
    assert bucket_index(np.arange(1, 91)).tolist() == [0] + [1] * 2 + [2] * 4 + [3] * 7 + [4] * 16 + [5] * 60


def test_identity_map_is_the_identity():
    lm = ConformalLevelMap.identity()
    for step in (0, 4, 13, 60, 89):
        np.testing.assert_allclose(lm.raw_levels(step, LEVELS), LEVELS)
        np.testing.assert_allclose(lm.calibrated_prob(step, LEVELS), LEVELS)
    assert Calibrator().version == "uncalibrated"


def test_map_is_monotone_with_an_exact_inverse():
    o, h, raw = _miscaled_pairs()
    cal = Calibrator()
    cal.add(o, h, "normal", raw)
    lm = cal.level_map("normal", int(o[-1]) + 1)
    grid = np.linspace(0, 1, 2001)
    for step in (0, 1, 2, 5, 13):
        r = lm.raw_levels(step, grid)
        assert np.all(np.diff(r) > 0)
        np.testing.assert_allclose(lm.calibrated_prob(step, r), grid, atol=1e-12)


def test_calibration_moves_coverage_towards_nominal_on_a_miscaled_model():
    """Model sigma x0.5: raw 80% intervals cover ~47%; calibrated ones cover ~80% on fresh data."""
    o, h, raw = _miscaled_pairs(n=1500, seed=1)
    cal = Calibrator(CalibrationConfig(window_days=2000))
    cal.add(o, h, "normal", raw)
    lm = cal.level_map("normal", int(o[-1]) + 1)
    _, _, fresh = _miscaled_pairs(n=20000, seed=2)
    for lo, hi, nominal in ((0.25, 0.75, 0.5), (0.1, 0.9, 0.8), (0.05, 0.95, 0.9)):
        raw_cov = np.mean((fresh >= lo) & (fresh <= hi))
        a, b = lm.raw_levels(0, [lo, hi])
        cal_cov = np.mean((fresh >= a) & (fresh <= b))
        assert abs(cal_cov - nominal) < 0.03 < abs(raw_cov - nominal)


def test_pairs_are_used_only_once_realised():
    cal = Calibrator()
    cal.add([100, 100], [1, 14], "normal", [0.99, 0.99])
    assert cal.level_map("normal", 100).maps[0].tolist() == KNOTS.tolist()  # nothing realised yet
    assert not np.allclose(cal.level_map("normal", 101).maps[0], KNOTS)   # h=1 realised on day 101
    assert np.allclose(cal.level_map("normal", 113).maps[3], KNOTS)       # h=14 not before day 114
    assert not np.allclose(cal.level_map("normal", 114).maps[3], KNOTS)
    # and forgotten after the window
    far = 100 + cal.config.window_days + 1
    assert np.allclose(cal.level_map("normal", far).maps[0], KNOTS)


def test_few_pairs_shrink_towards_the_parent():
    o, h, raw = _miscaled_pairs(n=2000)
    many = Calibrator()
    many.add(o, h, "normal", raw)
    few = Calibrator()
    few.add(o[:5], h[:5], "normal", raw[:5])
    day = int(o[-1]) + 1
    dist_many = np.abs(many.level_map("normal", day).maps[0] - KNOTS).max()
    dist_few = np.abs(few.level_map("normal", day).maps[0] - KNOTS).max()
    assert dist_few < dist_many
    # a regime with no pairs of its own uses the bucket map
    np.testing.assert_allclose(many.level_map("crisis", day).maps[0],
                               Calibrator(CalibrationConfig(by_regime=False)).level_map("crisis", day).maps[0]
                               if False else many.level_map("crisis", day).maps[0])
    only_bucket = Calibrator(CalibrationConfig(by_regime=False))
    only_bucket.add(o, h, "normal", raw)
    np.testing.assert_allclose(many.level_map("crisis", day).maps[0], only_bucket.level_map("crisis", day).maps[0])


def test_interpolation_between_representative_horizons():
    cal = Calibrator()
    o, _, raw = _miscaled_pairs(n=1000)
    cal.add(o, 3, "normal", raw)
    cal.add(o, 7, "normal", np.full(o.size, 0.5) + 0.0 * raw)
    lm = cal.level_map("normal", int(o[-1]) + 10)
    t3, t7, t5 = lm.table(2), lm.table(6), lm.table(4)
    a = (np.log(5) - np.log(3)) / (np.log(7) - np.log(3))
    np.testing.assert_allclose(t5, (1 - a) * t3 + a * t7)


def test_version_changes_with_the_buffers_and_save_load_round_trips(tmp_path):
    cal = Calibrator(asset="BTC-USD", model_version="m1")
    o, h, raw = _miscaled_pairs(n=300)
    cal.add(o, h, "calm", raw)
    v1 = cal.version
    assert v1.startswith("cal-")
    cal.add([int(o[-1]) + 1], [1], "calm", [0.3])
    assert cal.version != v1
    p = cal.save(tmp_path / "state" / "cal.json")
    back = Calibrator.load(p)
    assert back.version == cal.version and len(back) == len(cal)
    day = int(o[-1]) + 5
    np.testing.assert_array_equal(back.level_map("calm", day).maps, cal.level_map("calm", day).maps)
    bad = json.loads(p.read_text())
    bad["schema_version"] = 0
    p.write_text(json.dumps(bad))
    with pytest.raises(ModelNotFound, match="schema version 0"):
        Calibrator.load(p)


def test_coverage_reports_calibrated_intervals():
    cal = Calibrator(CalibrationConfig(coverage_days=1000))
    n = 400
    cal.add(np.arange(n), 1, "normal", np.full(n, 0.5), cal_pit=np.linspace(0.001, 0.999, n))
    cov = cal.coverage(n + 1)
    assert set(cov) == {"1"} and cov["1"]["n"] == n
    assert cal.coverage(n - 1)["1"]["n"] == n - 1  # the last pair is realised only on day n
    assert abs(cov["1"]["0.8"] - 0.8) < 0.02 and abs(cov["1"]["0.5"] - 0.5) < 0.02


def test_set_calibrated_and_prune():
    cal = Calibrator()
    cal.add([10, 11, 12], 7, "normal", [0.2, 0.4, 0.6])
    cal.set_calibrated([11], [7], [0.9])
    assert cal.pairs()["cal_pit"].tolist() == [0.2, 0.9, 0.6]
    assert cal.prune(11 + max(cal.config.window_days, cal.config.coverage_days)) == 2
    assert len(cal) == 1


def test_bad_inputs_are_refused():
    cal = Calibrator()
    with pytest.raises(InvalidInput, match="outside 1..90"):
        cal.add([1], [91], "normal", [0.5])
    with pytest.raises(InvalidInput, match=r"finite and in \[0, 1\]"):
        cal.add([1], [1], "normal", [1.5])
    with pytest.raises(InvalidInput, match="regime 'bullish' is not a known label"):
        cal.add([1], [1], "bullish", [0.5])


def test_pit_and_day_number():
    s = np.arange(100.0)[:, None]
    assert pit(s, np.array([-1.0]), axis=0)[0] == pytest.approx(0.5 / 101)
    assert pit(s, np.array([1000.0]), axis=0)[0] == pytest.approx(100.5 / 101)
    assert day_number("1970-01-02") == 1
    assert day_number(pd.DatetimeIndex(["2024-01-01"], tz="UTC")).tolist() == [19723]


class _FakeForecast:
    def __init__(self, conditional=False):
        self.conditional = conditional
        self.paths = np.random.default_rng(0).standard_normal((1000, 3)) * 0.01
        self.horizons = np.arange(1, 4)
        self.spot = 100.0
        self.origin = pd.Timestamp("2024-01-01")
        self.regime = {"label": "volatile"}


def test_record_adds_a_pair_and_refuses_scenarios():
    cal = Calibrator()
    cal.record(_FakeForecast(), realized_price=100.0)
    p = cal.pairs()
    assert len(p) == 1 and p.horizon[0] == 3 and p.regime[0] == "volatile" and 0.4 < p.raw_pit[0] < 0.6
    with pytest.raises(InvalidInput, match="never feeds calibration"):
        cal.record(_FakeForecast(conditional=True), realized_price=100.0)
