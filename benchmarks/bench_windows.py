"""Benchmark: rolling windows in-process vs the Ray Data pipeline, and a small Tune sweep's wall time.

Both window paths read the same Parquet store (ingested first, untimed) and call
the same core function, so the difference is Ray's overhead / parallelism.

    RAY_USAGE_STATS_ENABLED=0 \
        .venv/bin/python benchmarks/bench_windows.py [--data ../shared/data | --synthetic] [--assets N] \
        [--trials 4] [--max-steps 100] [--no-tune]

Prints a table (method, seconds, windows, windows/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "token")  # never off (RAY_NOTES.md gotcha 5)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local Ray on 127.0.0.1 (serving.loopback_ray_env)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--assets", type=int, default=24, help="number of assets (largest histories first)")
    ap.add_argument("--lookback", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=14)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--tune-assets", type=int, default=4)
    ap.add_argument("--no-tune", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from aetheris_ray.data import CsvSource, ParquetStore, SyntheticSource
    from aetheris_ray.windows import WindowSpec
    from data_pipelines.windows import build_windows, local_windows

    rows: list[tuple[str, float, int | str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_windows."))
    if args.synthetic or not Path(args.data, "daily").is_dir():
        src = SyntheticSource(seed=0, assets=[f"SYN-{i}" for i in range(args.assets)])
        label = f"synthetic x{args.assets}"
    else:
        src = CsvSource(args.data)
        label = args.data
    t = time.perf_counter()
    names = src.assets()
    sizes = {a: len(src.history(a).bars["1D"]) for a in names}
    names = sorted(names, key=lambda a: -sizes[a])[: args.assets]
    store = ParquetStore(tmp / "store")
    from aetheris_ray.data.schema import AssetData  # noqa: F401  (store ingests a source)

    class _Subset:
        def assets(self):
            return sorted(names)

        def history(self, asset, until=None):
            return src.history(asset, until)

    store.ingest(_Subset())
    rows.append(("ingest into Parquet store (untimed setup)", time.perf_counter() - t, "-"))
    spec = WindowSpec(args.lookback, args.horizon, 1)

    for run in (1, 2):
        t = time.perf_counter()
        w = local_windows(store, names, spec)
        dt = time.perf_counter() - t
        rows.append((f"local: store.history + make_windows, run {run}", dt, len(w["origin"])))
    n_local = len(w["origin"])

    import ray

    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows.append(("ray.init(num_cpus=2, no dashboard)", time.perf_counter() - t, "-"))
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        for run in (1, 2):
            t = time.perf_counter()
            wr = build_windows(str(store.path), names, spec)
            dt = time.perf_counter() - t
            rows.append((f"Ray Data: from_items(assets).map_batches, run {run}", dt, len(wr["origin"])))
        assert len(wr["origin"]) == n_local, "Ray and local window counts differ"

        if not args.no_tune:
            from aetheris_ray.windows import concat_windows, make_windows
            from tune.sweep import SweepOptions, run_sweep

            tn = names[: args.tune_assets]
            tw = concat_windows([make_windows(store.history(a), spec) for a in tn], spec)
            opts = SweepOptions(storage_path=str(tmp / "tune"), num_samples=args.trials, gpus_per_trial=0,
                                overrides={"max_steps": args.max_steps, "lookback": args.lookback})
            res = run_sweep("rough_vol", tw, opts, register=False)
            rows.append((f"Tune sweep rough_vol: {args.trials} trials x {args.max_steps} steps, ASHA, "
                         f"{len(tw['origin'])} windows, best val_ql {res.best_metrics['val_ql']:.3f}",
                         res.wall_s, len(tw["origin"])))
    finally:
        t = time.perf_counter()
        ray.shutdown()
        rows.append(("ray.shutdown()", time.perf_counter() - t, "-"))
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\ndata: {label}; {len(names)} assets; lookback {args.lookback}, horizon {args.horizon}, stride 1; "
          f"os.cpu_count()={os.cpu_count()}\n")
    print(f"| {'method':<95} | {'seconds':>8} | {'windows':>8} | {'windows/s':>10} |")
    print(f"|{'-' * 97}|{'-' * 10}|{'-' * 10}|{'-' * 12}|")
    for name, sec, n in rows:
        rate = f"{n / sec:,.0f}" if isinstance(n, int) and sec > 0 and not name.startswith("Tune") else "-"
        print(f"| {name:<95} | {sec:8.2f} | {n!s:>8} | {rate:>10} |")


if __name__ == "__main__":
    main()
