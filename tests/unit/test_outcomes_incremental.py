"""Issue 14, item 4: posting outcomes updates the calibration incrementally.

The next forecast after new outcomes runs no calibration walk-forward (counted on
the real `walkforward.walk_forward` / `raw_block`), fits at most once per refit
period of the new origins (counted on the real `model.fit_model`), scores the same
raw PITs as the pre-issue algorithm (a walk-forward at each outcome's origin, kept
below as the reference), skips the outcomes the data already implies, and keeps
the scores on disk.  The limits per request and per minute are checked here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray import engine, model, pairs, walkforward
from aetheris_ray import simulation as sim
from aetheris_ray.calibration import bucket_index, day_number, pit, sim_horizon
from aetheris_ray.config import load_settings
from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data import SyntheticSource
from aetheris_ray.features.state import regime_code
from aetheris_ray.history import MIN_CLOSES, at_origin, positive_closes
from aetheris_ray.model import model_config, resolve_config
from aetheris_ray.state_cache import clear_caches, origin_state

ASSET = "SYN-ETH"


def reference_pairs(data, outcomes, *, config, settings):
    """The algorithm before issue 14 item 4: the model (a walk-forward) at each outcome's origin."""
    out = []
    close_all = positive_closes(data)
    for row in outcomes:
        day, h, price = pd.Timestamp(row["origin"]), int(row["horizon"]), float(row["price"])
        origin, cut, close = at_origin(data, day, max(MIN_CLOSES, config.min_history + 1))
        st = origin_state(cut, origin, close, config, sim_horizon(h, config.calibrate), settings=settings)
        cond = st.conditioning(config.lookback)

        def sample(n, hh, rng, st=st, cond=cond):
            return st.fitted.simulate(cond, int(n), int(hh), rng)[0].astype(np.float32)

        cum = np.cumsum(sim.simulate_blocks(sample, config.walkforward_paths, h, int(day_number(day))), axis=1)
        lm = st.calibrator.level_map(st.state.regime_label, day_number(origin),
                                     buckets=list(range(int(bucket_index(h)) + 1)))
        raw = float(pit(cum[:, h - 1:h], np.array([np.log(price / float(close_all[day]))]), axis=0)[0])
        out.append((int(day_number(day)), h, regime_code(st.state.regime_label), raw,
                    float(lm.calibrated_prob(h - 1, raw))))
    return out


class Counter:
    """Wraps a real function and counts its calls."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, *a, **k):
        self.n += 1
        return self.fn(*a, **k)


@pytest.fixture(scope="module")
def hist():
    return SyntheticSource(seed=0).history(ASSET)


@pytest.fixture()
def settings(tmp_path):
    clear_caches()
    pairs.clear()
    return load_settings(home=tmp_path)


@pytest.fixture()
def counted(monkeypatch):
    c = {"walk_forward": Counter(walkforward.walk_forward), "raw_block": Counter(walkforward.raw_block),
         "fit_model": Counter(model.fit_model)}
    monkeypatch.setattr(walkforward, "walk_forward", c["walk_forward"])
    monkeypatch.setattr(walkforward, "raw_block", c["raw_block"])
    monkeypatch.setattr(model, "fit_model", c["fit_model"])
    return c


def past_outcomes(close: pd.Series, back: int, n: int, horizon: int = 5, factor: float = 1.03) -> list[dict]:
    """``n`` outcomes at consecutive origins from ``back`` closes before the end (horizon 5 is not recorded by the
    walk-forward, so none is implied by the data)."""
    return [{"origin": str(close.index[-1 - back - i].date()), "horizon": horizon,
             "price": float(close.iloc[-1 - back - i + horizon]) * factor} for i in range(n)]


REQ = ForecastRequest(asset=ASSET, horizon=7, paths=500, seed=2)


@pytest.mark.slow
def test_new_outcomes_run_no_walk_forward_and_fit_once_per_refit_period(hist, settings, counted):
    base = engine.prepare(hist, REQ, settings=settings)  # the forecast's own state: one walk-forward
    assert counted["walk_forward"].n == 1
    close = positive_closes(hist)
    rows = past_outcomes(close, 40, 12)
    for c in counted.values():
        c.n = 0
    after = engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert counted["walk_forward"].n == 0 and counted["raw_block"].n == 0
    days = day_number(pd.DatetimeIndex([r["origin"] for r in rows]))
    cfg = resolve_config(model_config(None)[0])
    periods = np.unique(days // cfg.refit_every).size
    assert 1 <= counted["fit_model"].n <= periods + 2  # the fits in force (+ at most their warm-start anchors)
    assert after.extra["metadata"]["calibration_pairs"] == base.extra["metadata"]["calibration_pairs"] + 12
    # the next forecast again: nothing scored, nothing fitted
    for c in counted.values():
        c.n = 0
    s0 = dict(pairs.STATS)
    engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert counted["fit_model"].n == 0 and counted["walk_forward"].n == 0
    assert pairs.STATS["scored"] == s0["scored"] and pairs.STATS["reused"] == s0["reused"] + 12


@pytest.mark.slow
def test_same_raw_scores_as_a_walk_forward_at_each_origin(hist, settings):
    cfg = resolve_config(model_config(None)[0])
    close = positive_closes(hist)
    rows = past_outcomes(close, 30, 3) + past_outcomes(close, 60, 1, horizon=2, factor=0.9)
    origin, data, cl = at_origin(hist, None, max(MIN_CLOSES, cfg.min_history + 1))
    st = origin_state(data, origin, cl, cfg, sim_horizon(7), settings=settings)
    new = sorted(pairs.outcome_pairs(hist, rows, config=cfg, settings=settings, state=st))
    old = sorted(reference_pairs(hist, rows, config=cfg, settings=settings))
    assert len(new) == 4
    assert [p[:3] for p in new] == [p[:3] for p in old]
    np.testing.assert_array_equal([p[3] for p in new], [p[3] for p in old])  # raw PITs: bitwise
    # the calibrated PIT comes from the forecast's buffers (pairs realised by the origin) instead of
    # the origin's own: close, not equal
    np.testing.assert_allclose([p[4] for p in new], [p[4] for p in old], atol=0.05)


@pytest.mark.slow
def test_calibration_moves_with_the_outcomes(hist, settings):
    close = positive_closes(hist)
    base = engine.prepare(hist, REQ, settings=settings)
    rows = [dict(r, price=r["price"] * 3) for r in past_outcomes(close, 20, 10, horizon=6)]  # far above the cone
    after = engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert after.level_map.version != base.level_map.version
    b, a = base.extra["coverage"]["4-7"], after.extra["coverage"]["4-7"]
    assert a["n"] == b["n"] + 10 and a["0.9"] < b["0.9"]


@pytest.mark.slow
def test_outcomes_implied_by_the_data_are_skipped_unscored(hist, settings, counted):
    close = positive_closes(hist)
    base = engine.prepare(hist, REQ, settings=settings)
    rows = past_outcomes(close, 30, 20, horizon=7)  # (origin, 7) pairs the walk-forward already recorded
    for c in counted.values():
        c.n = 0
    s0 = dict(pairs.STATS)
    after = engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert pairs.STATS["implied"] == s0["implied"] + 20 and pairs.STATS["scored"] == s0["scored"]
    assert counted["fit_model"].n == 0 and counted["walk_forward"].n == 0
    assert after.extra["metadata"]["calibration_pairs"] == base.extra["metadata"]["calibration_pairs"]


@pytest.mark.slow
def test_scores_are_kept_on_disk(hist, settings, counted):
    close = positive_closes(hist)
    engine.prepare(hist, REQ, settings=settings)
    rows = past_outcomes(close, 50, 5)
    first = engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    pairs.clear()  # a new process: memory gone, the state folder kept
    counted["fit_model"].n = 0
    s0 = dict(pairs.STATS)
    again = engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert pairs.STATS["scored"] == s0["scored"] and pairs.STATS["reused"] == s0["reused"] + 5
    assert counted["fit_model"].n == 0
    assert again.level_map.version == first.level_map.version


@pytest.mark.slow
def test_prescore_leaves_the_next_forecast_nothing_to_score(hist, settings, counted):
    cfg = resolve_config(model_config(None)[0])
    close = positive_closes(hist)
    engine.prepare(hist, REQ, settings=settings)
    rows = past_outcomes(close, 70, 6) + past_outcomes(close, 30, 4, horizon=7)  # 4 implied by the data
    assert pairs.prescore(hist, rows, config=cfg, settings=settings) == 6
    assert pairs.prescore(hist, rows, config=cfg, settings=settings) == 0  # already scored
    for c in counted.values():
        c.n = 0
    s0 = dict(pairs.STATS)
    engine.prepare(hist, REQ, settings=settings, outcomes=rows)
    assert pairs.STATS["scored"] == s0["scored"] and pairs.STATS["reused"] == s0["reused"] + 6
    assert pairs.STATS["implied"] == s0["implied"] + 4
    assert counted["fit_model"].n == 0 and counted["walk_forward"].n == 0
