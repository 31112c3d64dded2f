"""A million paths with exact quantiles: in the caller and on 1 and 2 simulator actors, next to the numpy floor.

    .venv/bin/python benchmarks/bench_montecarlo.py [--paths 1000000] [--horizon 14] [--rounds 5]
                                                    [--repo PATH] [--no-ray]

Rows (median over ``--rounds`` interleaved rounds after one warm-up, wall clock):

* ``numpy floor``: the same random draws as the engine's model (unit-variance Student-t
  as normal x sqrt((nu - 2) / chi2), float32, ``paths x horizon``), a float64 cumulative
  sum and 7 quantiles per step with ``np.quantile``: no model, no calibration, one process.
* ``draw only``: the engine's model paths (``Prepared.simulate``: the seeded blocks), in the caller.
* ``finish only``: `engine.finish` on those paths (cumulative sums, calibrated cone, dense
  CDF of the last step, one threshold).
* ``in the caller``: both, what ``forecast_prepared(prep, None)`` does.
* ``N actor(s)``: `aetheris_ray.distributed.montecarlo.forecast_prepared` on a pool of
  N `SimulatorActor` s (``local_max_paths=0``), paths drawn on the actors, finish in the caller.

The synthetic market (SYN-BTC, the engine's baseline model) is the data.  Every row's
quantiles are checked to be bitwise equal.  Ratios are against the floor of the same run.
``--repo`` imports ``aetheris_ray`` from another checkout (a before/after comparison in one
session: run the script once per tree, alternating).  No timing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose aetheris_ray is measured")
    ap.add_argument("--no-ray", action="store_true", help="skip the actor rows")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    warnings.simplefilter("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # never off (RAY_NOTES.md gotcha 5)

    from aetheris_ray import engine
    from aetheris_ray import simulation as sim
    from aetheris_ray.contract import parse_request
    from aetheris_ray.data import SyntheticSource

    src = SyntheticSource(seed=0)
    req = parse_request({"asset": "SYN-BTC", "horizon": args.horizon, "paths": args.paths, "seed": 1,
                         "quantiles": list(LEVELS), "thresholds": [60_000.0]})
    prep = engine.prepare(src.history("SYN-BTC"), req)
    nu = float(np.asarray(prep.cond["residuals"]["nu"]).ravel()[0]) if "nu" in prep.cond.get("residuals", {}) else 5.0
    n, h = args.paths, args.horizon

    def floor():
        rng = np.random.default_rng(7)
        z = rng.standard_normal((n, h), dtype=np.float32)
        g = rng.standard_gamma(np.float32(nu / 2), size=(n, h), dtype=np.float32)
        z *= np.sqrt(np.float32(nu - 2) / (2 * g))
        cum = np.cumsum(z, axis=1, dtype=np.float64)
        return np.quantile(cum, LEVELS, axis=0)

    # the request's seeded blocks, as the engine draws them (Prepared.simulate; older trees: sample + concatenate)
    draw = getattr(prep, "simulate", None) or (lambda: sim.simulate_blocks(prep.sample, n, h, prep.seed))
    paths = draw()
    rows: dict[str, object] = {
        "numpy floor (same draws + cumsum + np.quantile)": floor,
        "draw only (seeded blocks, caller)": draw,
        "finish only (engine.finish, caller)": lambda: engine.finish(prep, paths),
        "in the caller (draw + finish, no Ray)": lambda: engine.finish(prep, draw()),
    }
    pools = []
    if not args.no_ray:
        import ray

        from aetheris_ray.distributed.montecarlo import SimulatorPool, forecast_prepared

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        for k in (1, 2):
            pool = SimulatorPool(k, num_cpus=0.25)
            pool.ready()
            pools.append(pool)
            rows[f"{k} actor{'s' if k > 1 else ''} (draw on actors, finish in caller)"] = (
                lambda pool=pool: forecast_prepared(prep, pool, local_max_paths=0))
    ref = engine.finish(prep, paths).quantiles
    times: dict[str, list[float]] = {k: [] for k in rows}
    for name, fn in rows.items():  # warm-up (actors load the model, first-touch allocations)
        out = fn()
        if hasattr(out, "quantiles"):
            assert np.array_equal(out.quantiles, ref), f"{name}: quantiles differ"
    for _ in range(args.rounds):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for pool in pools:
        pool.shutdown()
    base = statistics.median(times[next(iter(rows))])
    print(f"Monte Carlo {n:,} paths x {h} days, SYN-BTC (baseline model), exact quantiles; "
          f"median of {args.rounds} interleaved rounds; package from {args.repo}")
    print(f"{'what':<58} {'median s':>9} {'min s':>7} {'max s':>7} {'x floor':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<58} {med:>9.3f} {min(ts):>7.3f} {max(ts):>7.3f} {med / base:>8.2f}")


if __name__ == "__main__":
    main()
