"""Walk-forward backtests on Ray: one task per asset running the harness's own `run_asset`.

The evaluation harness (`aetheris_ray.evaluation.backtest`) splits its work by asset:
`run_asset` is the unit its process pool runs, and its results merge exactly.  Here
the same function runs as Ray tasks (on a local Ray or a cluster), so the numbers are
the ones ``backtest(..., workers=1)`` gives; the test checks it.

Fan-out granularity: assets.  Splitting one asset further into origin blocks is left
out on purpose: a model "predicts once per asset, for all origins" and may refit on a
schedule counted from the first origin, so origin blocks could change its numbers;
that split needs the harness to accept an explicit origin subset first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import ray

from aetheris_ray.quantiles import DEFAULT_LEVELS, labels, parse_levels


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to Ray at ``address`` (``"auto"``: a running one), or start a local one; returns whether it started one."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return True


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
    task_num_cpus: float = 1.0,
    max_retries: int = 2,
):
    """`aetheris_ray.evaluation.backtest.backtest` with the assets fanned out as Ray tasks.

    Parameters are those of the harness's ``backtest``; ``source`` should be a
    `SourceSpec` (or a data directory) so every task opens the data itself.
    ``address`` connects to a Ray cluster; without it a running Ray session is used,
    else a local Ray is started for the call and shut down after it.

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
    src = bt._resolve(source)
    names = bt.resolve_assets(src, assets)
    spec = bt._as_spec(source)
    started = connect(address)
    try:
        task = ray.remote(num_cpus=task_num_cpus, max_retries=max_retries)(bt.run_asset)
        models_ref = ray.put(list(models))
        refs = [task.remote(spec, a, s, e, hz, models_ref, lv) for a in names]
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
