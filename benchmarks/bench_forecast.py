"""One forecast, in-process, end to end from a warm store, next to the bare numpy floor.

    .venv/bin/python benchmarks/bench_forecast.py [--paths 10000] [--horizon 14] [--repeats 20]
                                                  [--data ../shared/data | --synthetic] [--cli N]

Rows (median over ``--repeats`` interleaved rounds after one warm-up run each, wall clock):

* ``numpy floor``: draw ``paths x horizon`` Gaussian log-returns with a seeded
  Generator, cumulate, take 7 quantiles per step.  No model, no data.
* ``engine.forecast``: `aetheris_ray.engine.forecast` on history already in memory.
* ``api.forecast (store)``: `aetheris_ray.api.forecast` reading a warm ParquetStore
  (built once in a temporary folder from BTC-USD of ``--data``, or from the synthetic
  market) and forecasting: what one CLI/Serve request costs in-process.

``--cli N`` adds two whole-process rows, N interleaved runs each: ``aetheris forecast``
(same request, from the same warm store, a fresh ``AETHERIS_HOME`` whose state is built
in a warm-up run) next to its floor ``python -c "import numpy, pandas, scipy"``.  Both run
with bytecode caches: ``PYTHONDONTWRITEBYTECODE`` is dropped from their environment, so the
warm-up compiles the package as its first run on a user's machine does (the floor's packages
were compiled when installed).

``--repo`` imports ``aetheris_ray`` from another checkout (before/after in one session).
Ratios are against the numpy floor of the same run.  No timing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

LEVELS = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, one call of each per round (after one warm-up call each)."""
    for fn in fns.values():
        fn()  # warm-up: imports, caches, first-touch allocations
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def cli_rows(store, asset: str, args, home: Path) -> dict:
    """``aetheris forecast`` as a whole process against ``python -c "import numpy, pandas, scipy"``."""
    # bytecode caches on, as on any machine that does not set PYTHONDONTWRITEBYTECODE: the floor's
    # packages were compiled when installed; the warm-up run compiles the package measured
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(AETHERIS_HOME=str(home), PYTHONPATH=str(args.repo.resolve()))
    exe = Path(sys.executable)
    cli = [str(exe.parent / "aetheris"), "forecast", "--asset", asset, "--horizon", str(args.horizon), "--paths",
           str(args.paths), "--seed", "7", "--store", str(store.path)]
    bare = [str(exe), "-c", "import numpy, pandas, scipy"]

    def run(cmd):
        return lambda: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return {"python -c 'import numpy, pandas, scipy' (process)": run(bare),
            "aetheris forecast (whole process, warm state)": run(cli)}


def build_store(root: Path, data: Path | None, asset: str):
    """A ParquetStore holding one asset (from ``data``'s daily file) or the synthetic market."""
    from aetheris_ray.data import CsvSource, ParquetStore, SyntheticSource

    store = ParquetStore(root / "store")
    if data is not None:
        one = root / "one" / "daily"
        one.mkdir(parents=True)
        shutil.copy(data / "daily" / f"{asset}.csv", one / f"{asset}.csv")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            store.ingest(CsvSource(root / "one"))
    else:
        store.ingest(SyntheticSource(seed=0))
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic market even if --data exists")
    ap.add_argument("--cli", type=int, default=0, help="also time N whole `aetheris forecast` processes")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose aetheris_ray is measured")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))

    from aetheris_ray import engine
    from aetheris_ray.api import forecast
    from aetheris_ray.contract import ForecastRequest

    data = None if args.synthetic or not (args.data / "daily").is_dir() else args.data
    asset = "BTC-USD" if data is not None else "SYN-BTC"
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp), data, asset)
        history = store.history(asset)
        req = ForecastRequest(asset=asset, horizon=args.horizon, paths=args.paths, seed=7, quantiles=list(LEVELS))

        def floor() -> None:
            rng = np.random.default_rng(7)
            cum = np.cumsum(0.03 * rng.standard_normal((args.paths, args.horizon)), axis=1)
            np.quantile(cum, LEVELS, axis=0)

        rows = interleaved({
            "numpy floor (draw + cumsum + 7 quantiles/step)": floor,
            "engine.forecast (history in memory)": lambda: engine.forecast(history, req),
            "api.forecast (warm ParquetStore)": lambda: forecast(
                asset, args.horizon, paths=args.paths, seed=7, quantiles=list(LEVELS), source=store),
        }, args.repeats)
        procs = interleaved(cli_rows(store, asset, args, Path(tmp) / "home"), args.cli) if args.cli else {}
    base = statistics.median(next(iter(rows.values())))
    print(f"one forecast: {args.paths:,} paths x {args.horizon} days, {asset} "
          f"({'shared data' if data is not None else 'synthetic'}), median of {args.repeats} interleaved rounds; "
          f"package from {args.repo}")
    print(f"{'what':<50} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'x floor':>8}")
    for name, ts in rows.items():
        q = np.quantile(ts, [0.1, 0.9]) * 1e3
        med = statistics.median(ts)
        print(f"{name:<50} {med * 1e3:>10.2f} {q[0]:>8.2f} {q[1]:>8.2f} {med / base:>8.2f}")
    if procs:
        pbase = statistics.median(next(iter(procs.values())))
        print(f"whole processes, median of {args.cli} interleaved runs (ratio to the bare import)")
        for name, ts in procs.items():
            q = np.quantile(ts, [0.1, 0.9]) * 1e3
            med = statistics.median(ts)
            print(f"{name:<50} {med * 1e3:>10.1f} {q[0]:>8.1f} {q[1]:>8.1f} {med / pbase:>8.2f}")


if __name__ == "__main__":
    main()
