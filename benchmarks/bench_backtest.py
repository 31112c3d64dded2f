"""Backtest throughput: forecasts per second per model, and (optionally) the full dev run's wall time.

    .venv/bin/python benchmarks/bench_backtest.py [--data ../shared/data]
        [--assets BTC-USD,ETH-USD,SOL-USD,DOGE-USD] [--start 2024-01-01] [--end 2024-12-31]
        [--horizons 1,3,7,14] [--full] [--workers 2]

A forecast is one model x asset x origin x horizon (7 quantiles).  Two measures per
model on the subset, in one process:

* ``predict``: `WalkForwardModel.predict` alone on histories already in memory
  (the model's own cost);
* ``harness``: `backtest(..., workers=1)` with that model alone: reading the data,
  predicting, building the export rows and scoring them.

Ratios are against EWMA-Normal (the cheapest baseline) in the same run.  The
engine (`aetheris_ray.walkforward.EngineModel`) is included when it imports.
``--full`` then runs the dev period of EVALUATION.md (every asset, 2022-01-01 to
2024-12-31, horizons 1,3,7,14, all models, ``--workers`` processes) and prints
its wall time and pooled table.  No timing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def models() -> list:
    from aetheris_ray.evaluation.baselines import baseline_models

    out = baseline_models()
    try:
        from aetheris_ray.walkforward import EngineModel
    except ImportError as e:
        print(f"(engine not included: {e})")
    else:
        out.insert(0, EngineModel())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--assets", default="BTC-USD,ETH-USD,SOL-USD,DOGE-USD")
    ap.add_argument("--start", default="2024-01-01")
    ap.add_argument("--end", default="2024-12-31")
    ap.add_argument("--horizons", default="1,3,7,14")
    ap.add_argument("--full", action="store_true", help="also run the full dev period (minutes)")
    ap.add_argument("--workers", type=int, default=2, help="processes for --full")
    args = ap.parse_args()

    import pandas as pd

    from aetheris_ray.evaluation.backtest import SourceSpec, backtest
    from aetheris_ray.evaluation.report import markdown_table
    from aetheris_ray.quantiles import DEFAULT_LEVELS

    warnings.simplefilter("ignore")  # data-quality notes of the real files
    if not (args.data / "daily").is_dir():
        sys.exit(f"no data at {args.data}: pass --data DIR (a folder laid out like shared/data)")
    spec = SourceSpec(data=str(args.data))
    src = spec.open()
    assets = [a.strip() for a in args.assets.split(",")]
    horizons = [int(h) for h in args.horizons.split(",")]
    start, end = pd.Timestamp(args.start), pd.Timestamp(args.end)
    histories = {a: src.history(a, until=end) for a in assets}
    origins = {}
    for a, d in histories.items():
        c = d.daily_close().dropna()
        origins[a] = c.index[(c.index >= start) & (c.index <= end - pd.Timedelta(days=min(horizons)))]

    rows = []
    for m in models():
        t0 = time.perf_counter()
        n_pred = 0
        for a in assets:
            q = m.predict(histories[a], origins[a], horizons, DEFAULT_LEVELS)
            n_pred += int((q == q).all(axis=-1).sum())  # finite forecasts
        t_pred = time.perf_counter() - t0
        res = backtest(spec, assets, start, end, horizons, [m], progress=False, workers=1)
        rows.append((m.name, n_pred, t_pred, len(res.frame), res.wall_s))
    ref = next((r for r in rows if r[0] == "ewma_normal"), rows[0])
    print(f"backtest throughput: {len(assets)} assets ({args.assets}), {args.start} to {args.end}, "
          f"horizons {args.horizons}, 1 process")
    print(f"{'model':<14} {'forecasts':>9} {'predict s':>9} {'predict f/s':>12} {'harness s':>9} {'harness f/s':>12}"
          f" {'f/s vs ewma':>11}")
    for name, n, tp, nh, th in rows:
        print(f"{name:<14} {n:>9,} {tp:>9.3f} {n / tp:>12,.0f} {th:>9.2f} {nh / th:>12,.0f} "
              f"{(nh / th) / (ref[3] / ref[4]):>11.3f}")

    if args.full:
        t0 = time.perf_counter()
        res = backtest(spec, "all", "2022-01-01", "2024-12-31", [1, 3, 7, 14], models(), progress=False,
                       workers=args.workers)
        wall = time.perf_counter() - t0
        print(f"\nfull dev run: {len(res.assets)} assets, 2022-01-01 to 2024-12-31, horizons 1,3,7,14, "
              f"{', '.join(res.models)}, {args.workers} workers: {len(res.frame):,} forecasts in {wall:.1f} s "
              f"({len(res.frame) / wall:,.0f} f/s)")
        print(markdown_table(res.pooled()))


if __name__ == "__main__":
    main()
