"""Next-forecast latency after posting n outcomes with new past origins (issue 14, item 4).

In-process (`engine.prepare`, what the Serve app's Features deployment runs), on the
real data: the asset's forecast state is warmed first, then ``n`` outcomes with
origins the data's own calibration buffers do not hold are posted and the next
forecast is timed, minus the same forecast without them (cached: milliseconds).

``--old`` also times the pre-issue-14 algorithm (`old_outcome_pairs` below: the model
at each outcome's origin, i.e. a calibration walk-forward per new origin) for the
first sizes given (it is minutes at 100).

    python benchmarks/bench_outcomes.py --asset ETH-USD --sizes 1 10 100 --old 1 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from aetheris_ray import engine, pairs
from aetheris_ray import simulation as sim
from aetheris_ray.calibration import ConformalLevelMap, bucket_index, day_number, pit, sim_horizon
from aetheris_ray.config import load_settings
from aetheris_ray.contract import ForecastRequest
from aetheris_ray.data import CsvSource
from aetheris_ray.errors import DataError
from aetheris_ray.features.state import regime_code
from aetheris_ray.history import MIN_CLOSES, at_origin, positive_closes
from aetheris_ray.state_cache import origin_state


def old_outcome_pairs(data, outcomes, *, config, settings=None):
    """The algorithm before issue 14 item 4 (no memo): `origin_state` (a walk-forward) at each outcome's origin."""
    todo: dict[str, list] = {}
    out = []
    for row in outcomes:
        todo.setdefault(str(pd.Timestamp(row["origin"]).date()), []).append((int(row["horizon"]), float(row["price"])))
    close_all = positive_closes(data)
    for o, items in todo.items():
        day = pd.Timestamp(o)
        if day not in close_all.index:
            continue
        h_max = max(h for h, _ in items)
        try:
            origin, cut, close = at_origin(data, day, max(MIN_CLOSES, config.min_history + 1))
            st = origin_state(cut, origin, close, config, sim_horizon(h_max, config.calibrate), settings=settings)
        except DataError:
            continue
        cond = st.conditioning(config.lookback)
        spot = float(close.iloc[-1])

        def sample(n, h, rng, st=st, cond=cond):
            return st.fitted.simulate(cond, int(n), int(h), rng)[0].astype(np.float32)

        cum = np.cumsum(sim.simulate_blocks(sample, config.walkforward_paths, h_max, int(day_number(day))), axis=1)
        needed = list(range(int(bucket_index(h_max)) + 1))
        lm = (st.calibrator.level_map(st.state.regime_label, day_number(origin), buckets=needed)
              if config.calibrate else ConformalLevelMap.identity())
        code = regime_code(st.state.regime_label)
        for h, price in items:
            raw = float(pit(cum[:, h - 1:h], np.array([np.log(price / spot)]), axis=0)[0])
            out.append((int(day_number(day)), h, code, raw, float(lm.calibrated_prob(h - 1, raw))))
    return out


def outcomes_at(close: pd.Series, first_back: int, n: int, horizon: int) -> list[dict]:
    """``n`` outcomes at consecutive past origins ``first_back`` .. closes before the end, priced 2% above the close."""
    rows = []
    for i in range(n):
        pos = len(close) - 1 - first_back - i
        rows.append({"origin": str(close.index[pos].date()), "horizon": horizon,
                     "price": float(close.iloc[pos + horizon]) * 1.02})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--asset", default="ETH-USD")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--old", type=int, nargs="*", default=[])
    ap.add_argument("--horizon", type=int, default=7)
    a = ap.parse_args(argv)
    hist = CsvSource(a.data).history(a.asset)
    close = positive_closes(hist)
    home = tempfile.mkdtemp(prefix="bench-outcomes-")
    settings = load_settings(home=home)
    req = ForecastRequest(asset=a.asset, horizon=a.horizon, paths=1000, seed=1)

    def timed(outcomes, impl=None):
        orig = engine.outcome_pairs
        if impl is not None:
            engine.outcome_pairs = lambda d, o, *, config, settings=None, state=None: impl(
                d, o, config=config, settings=settings)
        try:
            t = time.perf_counter()
            p = engine.prepare(hist, req, settings=settings, outcomes=outcomes)
            return time.perf_counter() - t, p
        finally:
            engine.outcome_pairs = orig

    t0, p0 = timed([])
    print(f"{a.asset}: data end {close.index[-1].date()}, cold state {t0:.1f} s, "
          f"{p0.extra['metadata']['calibration_pairs']} buffer pairs", flush=True)
    base = min(timed([])[0] for _ in range(3))
    print(f"warm forecast without outcomes: {base * 1e3:.1f} ms", flush=True)
    back = 500  # origins ~500 closes back: outside the calibration window (365 d), so never implied by the data
    for n in a.sizes:
        rows = outcomes_at(close, back, n, 5)  # horizon 5: not a representative horizon either
        back += n
        s0 = dict(pairs.STATS)
        t, p = timed(rows)
        t2, _ = timed(rows)
        st = {k: pairs.STATS[k] - s0[k] for k in s0}
        print(f"new: n={n:4d}  next forecast +{(t - base) * 1e3:9.1f} ms ({(t - base) * 1e3 / n:7.1f} ms/outcome)  "
              f"again +{(t2 - base) * 1e3:7.1f} ms  pairs {p.extra['metadata']['calibration_pairs']}  {st}", flush=True)
    implied = outcomes_at(close, 30, 100, 7)  # origins inside the buffers at a representative horizon
    s0 = dict(pairs.STATS)
    t, _ = timed(implied)
    print(f"implied: n=100  next forecast +{(t - base) * 1e3:.1f} ms  "
          f"{ {k: pairs.STATS[k] - s0[k] for k in s0} }", flush=True)
    for n in a.old:
        rows = outcomes_at(close, back, n, 5)
        back += n
        t, p = timed(rows, old_outcome_pairs)
        print(f"old: n={n:4d}  next forecast +{t - base:8.1f} s ({(t - base) / n:6.2f} s/outcome)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
