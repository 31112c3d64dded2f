"""Realised outcomes posted back: durable log, calibration pairs, point-in-time use (no Ray)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from aetheris_ray.history import positive_closes
from aetheris_ray.model import model_config, resolve_config
from aetheris_ray.pairs import outcome_pairs
from aetheris_ray.api import forecast
from aetheris_ray.calibration import Calibrator, day_number
from aetheris_ray.config import load_settings
from aetheris_ray.data import SyntheticSource
from aetheris_ray.errors import DataQualityWarning
from aetheris_ray.outcomes import Outcome, OutcomeLog, stored_outcomes


@pytest.fixture(scope="module")
def market():
    return SyntheticSource(seed=0)


@pytest.fixture()
def settings(tmp_path):
    return load_settings(home=tmp_path)


def _fc(market, settings, **kw):
    return forecast("SYN-ETH", 7, source=market, paths=1000, seed=3, settings=settings, **kw)


@pytest.mark.slow
def test_live_outcome_joins_the_buffers(market, settings):
    before = _fc(market, settings)
    origin = before.origin.date()
    OutcomeLog(settings.state_path).add([Outcome(asset="SYN-ETH", origin=origin, horizon=7, price=before.spot * 4)])
    after = _fc(market, settings)
    assert after.metadata["calibration_pairs"] == before.metadata["calibration_pairs"] + 1
    assert after.calibration_version != before.calibration_version
    assert after.coverage["4-7"]["n"] == before.coverage["4-7"]["n"] + 1
    assert after.coverage["4-7"]["0.9"] < before.coverage["4-7"]["0.9"]
    # as of the origin, the outcome (realised 7 days later) is not known yet
    pinned = _fc(market, settings, as_of=str(origin))
    assert pinned.calibration_version == before.calibration_version
    np.testing.assert_array_equal(pinned.quantiles, before.quantiles)


@pytest.mark.slow
def test_pair_pit_is_the_raw_forecast_cdf(market, settings):
    hist = market.history("SYN-ETH")
    cfg = resolve_config(model_config(None)[0])
    close = positive_closes(hist)
    origin = close.index[-1]
    median = float(_fc(market, settings).quantile(0.5)[6])  # day 7
    rows = [{"origin": str(origin.date()), "horizon": 7, "price": median},
            {"origin": str(origin.date()), "horizon": 3, "price": float(close.iloc[-1]) * 100},
            {"origin": "1990-01-01", "horizon": 1, "price": 1.0}]  # no close then: skipped
    from aetheris_ray.calibration import sim_horizon
    from aetheris_ray.history import MIN_CLOSES, at_origin
    from aetheris_ray.state_cache import origin_state

    o, cut, cl = at_origin(hist, None, max(MIN_CLOSES, cfg.min_history + 1))
    st = origin_state(cut, o, cl, cfg, sim_horizon(7), settings=settings)  # the forecast's buffers: its level maps
    pairs = outcome_pairs(hist, rows, config=cfg, settings=settings, state=st)
    assert len(pairs) == 2
    by_h = {p[1]: p for p in pairs}
    assert by_h[7][0] == day_number(origin)
    assert 0.35 < by_h[7][4] < 0.65  # the calibrated median is near the middle of the calibrated CDF
    assert by_h[3][3] > 0.99 and by_h[3][4] > 0.99  # a hundredfold price is above every path


def test_history_pair_is_kept_over_a_posted_one():
    cal = Calibrator()
    cal.add([100, 101], 1, "normal", [0.2, 0.3])
    merged = cal.with_pairs(np.array([100, 102]), np.array([1, 1]), np.array([1, 1]), [0.9, 0.9], [0.9, 0.9])
    raw = merged.pairs().set_index("horizon")["raw_pit"].tolist()
    assert raw == [0.2, 0.3, 0.9] and len(cal) == 2  # the original is untouched


@pytest.mark.slow
def test_unreadable_log_warns_and_forecast_goes_on(market, settings):
    settings.state_path.mkdir(parents=True, exist_ok=True)
    (settings.state_path / "outcomes.json").write_text("{not json")
    with pytest.warns(DataQualityWarning, match="outcome log unreadable"):
        assert stored_outcomes(settings.state_path, "SYN-ETH") == []
    with pytest.warns(DataQualityWarning):
        fc = _fc(market, settings)
    assert np.all(np.isfinite(fc.quantiles))
    assert (settings.state_path / "outcomes.json").read_text() == "{not json"  # left as it was


def test_outcome_validation():
    with pytest.raises(ValueError, match="price"):
        Outcome(asset="X", origin=dt.date(2024, 1, 1), horizon=1, price=0)
    with pytest.raises(ValueError, match="horizon"):
        Outcome(asset="X", origin=dt.date(2024, 1, 1), horizon=91, price=1)
