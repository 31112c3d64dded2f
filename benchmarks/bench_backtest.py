"""Backtest throughput: forecasts per second per model, and (optionally) the full dev run's wall time.

    .venv/bin/python benchmarks/bench_backtest.py [--data ../shared/data]
        [--assets BTC-USD,ETH-USD,SOL-USD,DOGE-USD] [--start 2024-01-01] [--end 2024-12-31]
        [--horizons 1,3,7,14] [--engines PRESET,...] [--full] [--workers 2] [--ray [--block-days 180] [--ray-cpus N]]
        [--repo PATH]

A forecast is one model x asset x origin x horizon (7 quantiles).  Two measures per
model on the subset, in one process, under one BLAS thread (`api.one_blas_thread`, as
``aetheris backtest`` and Ray's workers run: scipy's L-BFGS-B is several times slower
with two OpenBLAS threads on this machine):

* ``predict``: `WalkForwardModel.predict` alone on histories already in memory
  (the model's own cost);
* ``harness``: `backtest(..., workers=1)` with that model alone: reading the data,
  predicting, building the export rows and scoring them.

Ratios are against EWMA-Normal (the cheapest baseline) in the same run.  The
engine (`aetheris_ray.walkforward.EngineModel`) is included when it imports.
``--full`` then runs the dev period of EVALUATION.md (every asset, 2022-01-01 to
2024-12-31, horizons 1,3,7,14, all models, ``--workers`` processes) and prints
its wall time and pooled table.  ``--ray`` times the subset with every model
in-process (one process) and on a local Ray (``--ray-cpus``, default all cores):
one task per asset, then assets x blocks of ``--block-days`` origin days, after a
warm-up call that starts the workers; it reports whether the exports are equal
(run with ``OMP_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1``: Ray's workers use
one BLAS thread, and the GARCH fits differ in the last bits with the thread count).
No timing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# --repo PATH: import aetheris_ray from another tree (a "before" extracted with git archive), same data
_TREE = Path(sys.argv[sys.argv.index("--repo") + 1]) if "--repo" in sys.argv[:-1] else REPO
sys.path.insert(0, str(_TREE))


def models(engines: str = "") -> list:
    """The baselines, the configured engine, and the engine presets named in ``engines`` (comma-separated)."""
    from aetheris_ray.evaluation.baselines import baseline_models

    out = baseline_models()
    try:
        from aetheris_ray.model import model_config
        from aetheris_ray.walkforward import EngineModel
    except ImportError as e:
        print(f"(engine not included: {e})")
    else:
        extra = [n.strip() for n in engines.split(",") if n.strip()]
        out[:0] = [EngineModel()] + [EngineModel(model_config(n)[0], name=f"engine_{n}") for n in extra]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--assets", default="BTC-USD,ETH-USD,SOL-USD,DOGE-USD")
    ap.add_argument("--start", default="2024-01-01")
    ap.add_argument("--end", default="2024-12-31")
    ap.add_argument("--horizons", default="1,3,7,14")
    ap.add_argument("--engines", default="", help="also time these engine presets (comma-separated names of --model)")
    ap.add_argument("--full", action="store_true", help="also run the full dev period (minutes)")
    ap.add_argument("--workers", type=int, default=2, help="processes for --full")
    ap.add_argument("--ray", action="store_true", help="also time the subset on a local Ray (per asset, per block)")
    ap.add_argument("--block-days", type=int, default=180, help="origin days per Ray task for --ray")
    ap.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray for --ray (default: all)")
    ap.add_argument("--repo", type=Path, default=REPO, help="import aetheris_ray from this tree (e.g. a 'before' "
                    "made with git archive COMMIT aetheris_ray | tar -x -C DIR)")
    args = ap.parse_args()

    import pandas as pd

    from aetheris_ray.api import one_blas_thread
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
    for m in models(args.engines):
        with one_blas_thread():  # as `aetheris backtest` runs (api.backtest) and Ray's workers
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

    if args.ray:
        ray_runs(spec, assets, start, end, horizons, args.block_days, args.ray_cpus)

    if args.full:
        t0 = time.perf_counter()
        with one_blas_thread():
            res = backtest(spec, "all", "2022-01-01", "2024-12-31", [1, 3, 7, 14], models(args.engines),
                           progress=False, workers=args.workers)
        wall = time.perf_counter() - t0
        print(f"\nfull dev run: {len(res.assets)} assets, 2022-01-01 to 2024-12-31, horizons 1,3,7,14, "
              f"{', '.join(res.models)}, {args.workers} workers: {len(res.frame):,} forecasts in {wall:.1f} s "
              f"({len(res.frame) / wall:,.0f} f/s)")
        print(markdown_table(res.pooled()))


def ray_runs(spec, assets, start, end, horizons, block_days, ray_cpus) -> None:
    """Wall time of the subset, every model: in-process, then Ray per asset and Ray per asset x block."""
    import pandas as pd
    import ray

    from aetheris_ray.distributed.backtest import backtest_ray, connect
    from aetheris_ray.evaluation.backtest import backtest, origin_blocks

    ms = models()
    t0 = time.perf_counter()
    local = backtest(spec, assets, start, end, horizons, ms, progress=False, workers=1)
    rows = [("in-process, 1 process", 1, time.perf_counter() - t0, True)]
    connect(num_cpus=ray_cpus)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        warm_start = end - pd.Timedelta(days=max(horizons) + 30)
        backtest_ray(spec, assets, warm_start, end, horizons, ms, block_days=None)  # starts the workers
        n_blocks = len(origin_blocks(start, end, horizons, block_days))
        for label, days, n in (("Ray, one task per asset", None, 1), (f"Ray, {block_days}-day blocks", block_days,
                                                                       n_blocks)):
            t0 = time.perf_counter()
            res = backtest_ray(spec, assets, start, end, horizons, ms, block_days=days)
            rows.append((label, len(assets) * n, time.perf_counter() - t0, res.export().equals(local.export())))
    finally:
        ray.shutdown()
    print(f"\n{len(assets)} assets, {start.date()} to {end.date()}, {', '.join(m.name for m in ms)}; "
          f"local Ray with {cpus} CPUs")
    print(f"{'run':<28} {'block tasks':>11} {'wall s':>8} {'equal export':>13}")
    for label, n, wall, same in rows:
        print(f"{label:<28} {n:>11} {wall:>8.1f} {'yes' if same else 'NO':>13}")


if __name__ == "__main__":
    main()
