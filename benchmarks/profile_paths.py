"""cProfile of the slow paths of issue 16, for docs/performance.md (before/after with ``--repo``).

    .venv/bin/python benchmarks/profile_paths.py {million,far,forecast} [--repo PATH] [--top 12]

* ``million``: `engine.finish` of 1,000,000 x 14 paths of SYN-BTC (the paths drawn first,
  outside the profile): the caller's share of a sharded million-path forecast.
* ``far``: 30 ``engine.forecast`` calls, BTC-USD at the data's end, 1,000 x 7, thresholds
  at 90,000 and 110,000 (the far one by importance sampling).
* ``forecast``: 50 ``engine.forecast`` calls, BTC-USD, 10,000 x 14.

Prints the total and the top functions by own time (``tottime``) and by cumulative time.
The whole ``aetheris forecast`` process is profiled with ``python -X importtime`` and
``python -m cProfile`` instead (docs/performance.md gives the commands).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", choices=["million", "far", "forecast"])
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose aetheris_ray is profiled")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    warnings.simplefilter("ignore")

    from aetheris_ray import engine
    from aetheris_ray import simulation as sim
    from aetheris_ray.contract import ForecastRequest

    if args.path == "million":
        from aetheris_ray.data import SyntheticSource

        req = ForecastRequest(asset="SYN-BTC", horizon=14, paths=1_000_000, seed=1, thresholds=[60_000.0])
        prep = engine.prepare(SyntheticSource(seed=0).history("SYN-BTC"), req)
        paths = sim.simulate_blocks(prep.sample, req.paths, req.horizon, prep.seed)
        engine.finish(prep, paths)  # warm-up

        def work():
            engine.finish(prep, paths)
    else:
        from aetheris_ray.data import CsvSource

        data = CsvSource(args.data).history("BTC-USD")
        if args.path == "far":
            req = ForecastRequest(asset="BTC-USD", horizon=7, paths=1000, seed=1, thresholds=[90_000.0, 110_000.0])
            n = 30
        else:
            req = ForecastRequest(asset="BTC-USD", horizon=14, paths=10_000, seed=7)
            n = 50
        engine.forecast(data, req)  # fit, cache, warm-up

        def work():
            for _ in range(n):
                engine.forecast(data, req)

    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats(key).print_stats(args.top)
        text = out.getvalue().replace(str(args.repo.resolve()) + "/", "").replace(sys.prefix + "/", "")
        print(f"== {args.path}, package from {args.repo}, by {key}")
        print("\n".join(line[:160] for line in text.splitlines() if line.strip()))


if __name__ == "__main__":
    main()
