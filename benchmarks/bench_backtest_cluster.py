"""`aetheris backtest --ray` on a simulated cluster: wall time with 1, 2 and 3 nodes, and the speed-up per node added.

    .venv/bin/python benchmarks/bench_backtest_cluster.py [--data ../shared/data]
        [--assets BTC-USD,ETH-USD,SOL-USD] [--start 2024-01-01] [--end 2024-12-31]
        [--horizons 1,3,7,14] [--block-days 180] [--nodes 3] [--cpus-per-node 1]

A `ray.cluster_utils.Cluster` on this machine: a head node, then one node added at a
time, each with ``--cpus-per-node`` CPUs (default 1: a node is one core).  At each size
the same backtest (a subset: the engine and the three baselines on ``--assets`` over
``--start`` .. ``--end``) runs through `aetheris_ray.distributed.backtest.backtest_ray`
on the cluster's address, as ``aetheris backtest --ray --address ADDRESS`` does: assets
x ``--block-days`` blocks of origins as Ray tasks, one merge task per asset.  Before
each timed run a short warm-up run starts the new node's workers.  The baseline is the
same backtest in this process (``workers=1``, one BLAS thread, as Ray's workers), timed
in the same run; every cluster run's export must equal it exactly.

The table gives the wall time per cluster size, the speed-up against one node, the
speed-up the last node added bought, and the 1-minute load average after each run (other
work on the same cores takes from what a node adds).  On a 2-core machine a third one-core node adds
processes, not cores: expect no gain from it (measure, don't assume).  No timing is
asserted.  Ray's token authentication stays on.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--assets", default="BTC-USD,ETH-USD,SOL-USD")
    ap.add_argument("--start", default="2024-01-01")
    ap.add_argument("--end", default="2024-12-31")
    ap.add_argument("--horizons", default="1,3,7,14")
    ap.add_argument("--block-days", type=int, default=180, help="origin days per Ray task")
    ap.add_argument("--nodes", type=int, default=3, help="largest cluster (head included)")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    args = ap.parse_args()
    if args.nodes < 1 or args.cpus_per_node < 1:
        sys.exit("--nodes and --cpus-per-node must be at least 1")
    if not (args.data / "daily").is_dir():
        sys.exit(f"no data at {args.data}: pass --data DIR (a folder laid out like shared/data)")

    import pandas as pd
    import ray
    from ray.cluster_utils import Cluster

    from aetheris_ray.api import one_blas_thread
    from aetheris_ray.distributed.backtest import backtest_ray
    from aetheris_ray.distributed.serving import require_ray_auth
    from aetheris_ray.evaluation.backtest import SourceSpec, backtest
    from aetheris_ray.evaluation.baselines import baseline_models
    from aetheris_ray.walkforward import EngineModel

    warnings.simplefilter("ignore")  # data-quality notes of the real files
    spec = SourceSpec(data=str(args.data))
    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    hz = [int(h) for h in args.horizons.split(",")]
    start, end = pd.Timestamp(args.start), pd.Timestamp(args.end)
    models = [EngineModel(), *baseline_models()]

    warm_start = end - pd.Timedelta(days=max(hz) + 30)
    with one_blas_thread():
        backtest(spec, assets, warm_start, end, hz, models, progress=False, workers=1)  # imports, data caches
        t0 = time.perf_counter()
        local = backtest(spec, assets, start, end, hz, models, progress=False, workers=1)
    local_s, local_load = time.perf_counter() - t0, os.getloadavg()[0]
    want = local.export()

    require_ray_auth()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    rows = []
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        for n in range(1, args.nodes + 1):
            if n > 1:
                cluster.add_node(num_cpus=args.cpus_per_node)
                cluster.wait_for_nodes()
            cpus = int(ray.cluster_resources().get("CPU", 0))
            backtest_ray(spec, assets, warm_start, end, hz, models, block_days=None)  # starts the workers
            t0 = time.perf_counter()
            res = backtest_ray(spec, assets, start, end, hz, models, address=cluster.address,
                               block_days=args.block_days or None)
            rows.append((n, cpus, time.perf_counter() - t0, res.export().equals(want), os.getloadavg()[0]))
    finally:
        ray.shutdown()
        cluster.shutdown()

    print(f"backtest --ray on a ray.cluster_utils.Cluster: {len(assets)} assets ({args.assets}), {args.start} to "
          f"{args.end}, horizons {args.horizons}, {', '.join(m.name for m in models)}, {len(want):,} forecasts, "
          f"{args.block_days}-day blocks; {os.cpu_count()} cores on this machine")
    print(f"in-process (1 process, the baseline): {local_s:.1f} s (load average {local_load:.1f})")
    print(f"{'nodes':>5} {'CPUs':>4} {'wall s':>7} {'vs 1 node':>9} {'last node added':>15} {'vs in-process':>13} "
          f"{'equal export':>12} {'load avg':>8}")
    for i, (n, cpus, wall, same, load) in enumerate(rows):
        added = f"{rows[i - 1][2] / wall:.2f}x" if i else "-"
        print(f"{n:>5} {cpus:>4} {wall:>7.1f} {rows[0][2] / wall:>8.2f}x {added:>15} {local_s / wall:>12.2f}x "
              f"{'yes' if same else 'NO':>12} {load:>8.1f}")


if __name__ == "__main__":
    main()
