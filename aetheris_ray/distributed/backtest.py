"""Walk-forward backtests on Ray: assets x blocks of origin days as Ray tasks, merged per asset.

The evaluation harness (`aetheris_ray.evaluation.backtest`) splits an asset's
origins into consecutive calendar blocks (`origin_blocks`): `run_block` forecasts
one block with every model, `finish_asset` merges the asset's blocks in date order
(the engine's sequential calibration pass runs there) and scores them.  Here both run
as Ray tasks on a local Ray or a cluster: one task per asset x block, then one per
asset that takes its blocks' results as arguments (Ray hands them over; the driver
only receives the scored rows).  The numbers do not depend on the split (the models'
answers are block-invariant, see `aetheris_ray.walkforward`), so they are the ones
``backtest(..., workers=1)`` gives, bitwise; the tests check it.

Block length.  `DEFAULT_BLOCK_DAYS` = 180 days of origins.  Measured on 8 assets over
the dev period (engine + 3 baselines, CPU time of each task run one after another):
an asset takes 4.5-6.3 s in one task; in 180-day blocks its tasks take 0.3-1.8 s (the
first block of an asset also carries the engine's ~380-day calibration warm-up) and
the merge 0.3-0.5 s, 4 % more CPU in all (365-day blocks: up to 2.5 s, 3 % more).  So
with enough cores an asset's wall time drops from ~6 s to ~2.3 s at 180 days (~3 s at
365) for a few percent of extra work: each block recomputes the fit its first origin
uses and that fit's warm-start anchor, and reads the asset's data.  Six blocks per
asset over three years also let a run of a handful of assets fill a few dozen cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import ray

from aetheris_ray.quantiles import DEFAULT_LEVELS, labels, parse_levels

#: Origin days per block of a Ray backtest (see the module docstring).
DEFAULT_BLOCK_DAYS = 180


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray at ``address`` (``"auto"``: a running one), or start a local one; returns whether it started one."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    from aetheris_ray.distributed.serving import loopback_ray_env, require_ray_auth

    require_ray_auth()  # token auth on, and a local Ray on 127.0.0.1 only (issue 14)
    loopback_ray_env()
    # address="local": a new Ray even where a stale /tmp/ray/ray_current_cluster points elsewhere
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


def _finish(spec, asset, start, end, horizons, models, levels, *blocks):
    """`finish_asset` with the blocks as separate arguments (Ray resolves top-level references only)."""
    from aetheris_ray.evaluation.backtest import finish_asset

    return finish_asset(spec, asset, start, end, horizons, models, levels, list(blocks))


def backtest_ray(
    source: Any,
    assets: str | Iterable[str],
    start: Any,
    end: Any,
    horizons: Sequence[int],
    models: Sequence[Any],
    levels: Sequence[float | str] | str | None = DEFAULT_LEVELS,
    *,
    address: str | None = None,
    block_days: int | None = DEFAULT_BLOCK_DAYS,
    task_num_cpus: float = 1.0,
    max_retries: int = 2,
):
    """`aetheris_ray.evaluation.backtest.backtest` with assets x origin blocks fanned out as Ray tasks.

    Parameters are those of the harness's ``backtest``; ``source`` should be a
    `SourceSpec` (or a data directory) so every task opens the data itself.
    ``address`` connects to a Ray cluster; without it a running Ray session is used,
    else a local Ray is started for the call and shut down after it.
    ``block_days`` is the length of the origin blocks (None: one block per asset).
    Each task is retried up to ``max_retries`` times when its worker dies.

    Returns
    -------
    BacktestResult
        Equal to the in-process result (same frame, metrics and counts).
    """
    from aetheris_ray.evaluation import backtest as bt

    t0 = time.perf_counter()
    s, e, hz = bt._check_period(start, end, horizons)
    lv = parse_levels(levels)
    bt._check_models(models)
    blocks = bt.origin_blocks(s, e, hz, block_days)
    src = bt._resolve(source)
    names = bt.resolve_assets(src, assets)
    spec = bt._as_spec(source)
    started = connect(address)
    try:
        opts = dict(num_cpus=task_num_cpus, max_retries=max_retries)
        block_task = ray.remote(**opts)(bt.run_block)
        finish_task = ray.remote(**opts)(_finish)
        models_ref = ray.put(list(models))
        refs = [finish_task.remote(spec, a, s, e, hz, models_ref, lv,
                                   *[block_task.remote(spec, a, s, e, hz, models_ref, lv, b) for b in blocks])
                for a in names]
        runs = ray.get(refs)
    finally:
        if started:
            ray.shutdown()
    # assembly, in asset order: the same steps as the harness's `backtest`
    frames = [r.frame for r in runs if not r.frame.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else bt._empty_frame(labels(lv))
    metrics = bt.merge_metrics(r.metrics for r in runs)
    counts = pd.concat([r.counts for r in runs], ignore_index=True) if runs else pd.DataFrame(
        columns=list(bt._COUNT_COLUMNS))
    unscored = {r.asset: r.note for r in runs if r.note}
    return bt.BacktestResult(frame=frame, metrics=metrics, counts=counts, unscored=unscored,
                             models=tuple(m.name for m in models), assets=tuple(names), horizons=hz, levels=lv,
                             start=s, end=e, wall_s=time.perf_counter() - t0)


def write_parquet(result, path: str | Path) -> Path:
    """Write a result's scored export rows to Parquet (the harness's own writer)."""
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".pq"):
        path = path.with_suffix(".parquet")
    return result.write(path)
