"""What a what-if scenario adds to one forecast, and the one-off cost of its sensitivities.

    .venv/bin/python benchmarks/bench_scenario.py [--paths 10000] [--horizon 14] [--repeats 20]
                                                  [--data ../shared/data | --synthetic]

Rows, per asset (CPU time of this process, best and median of ``--repeats`` runs
after a warm-up: the dev box is shared, and the best run is the least disturbed;
the fitted state and the sensitivities already cached in memory, as for every
request after the first on an (asset, origin)):

* ``plain``: `aetheris_ray.engine.forecast` without a scenario (the reference);
* one row per scenario: the same request with ``scenario=...``; the last column is
  the difference of the best times to ``plain``;
* ``sensitivities (once)``: `aetheris_ray.sensitivity.estimate` at the origin, what the
  first scenario request on an (asset, origin) pays before it is cached (in memory,
  and on disk under the state folder).

No timing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCENARIOS = (
    {"iv_level": 100},
    {"funding_rate": 0.003},
    {"gamma_squeeze": 2.5},
    {"iv_level": 100, "funding_rate": 0.003, "rv_shock": 1.5},
)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Best and median CPU seconds of ``fn`` over ``repeats`` runs after a warm-up."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return min(out), statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic market even if --data exists")
    args = ap.parse_args()

    from aetheris_ray.contract import ForecastRequest
    from aetheris_ray.data import CsvSource, SyntheticSource
    from aetheris_ray.engine import forecast
    from aetheris_ray.sensitivity import estimate

    if args.synthetic or not (args.data / "daily").is_dir():
        source, assets = SyntheticSource(seed=0), ("SYN-BTC", "SYN-ETH")
    else:
        source, assets = CsvSource(args.data), ("BTC-USD", "ETH-USD")
    print(f"{args.paths:,} paths x {args.horizon} days, CPU ms over {args.repeats} runs")
    print(f"{'asset':9} {'request':58} {'best':>8} {'median':>8} {'+best':>7}")
    for asset in assets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = source.history(asset)

        def run(scenario=None):
            return forecast(data, ForecastRequest(asset=asset, horizon=args.horizon, paths=args.paths, seed=1,
                                                  scenario=scenario))

        plain = timed(run, args.repeats)
        print(f"{asset:9} {'plain':58} {plain[0] * 1e3:8.2f} {plain[1] * 1e3:8.2f}")
        for sc in SCENARIOS:
            t = timed(lambda: run(sc), args.repeats)
            print(f"{asset:9} {str(sc):58} {t[0] * 1e3:8.2f} {t[1] * 1e3:8.2f} {(t[0] - plain[0]) * 1e3:+7.2f}")
        origin = data.daily_close().dropna().index[-1]
        once = timed(lambda: estimate(data, origin), max(3, args.repeats // 4))
        print(f"{asset:9} {'sensitivities (once per asset and origin)':58} {once[0] * 1e3:8.2f} {once[1] * 1e3:8.2f}")


if __name__ == "__main__":
    main()
