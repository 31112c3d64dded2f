"""Forecast evaluation: scores, mergeable aggregation, baselines, the walk-forward backtest, reports.

EVALUATION.md is the protocol.  Public names are imported lazily (the CLI stays
fast to start):

* scores: `pinball_quantile`, `crps_ensemble`, `coverage_interval`, `width`;
* aggregation: `Sum`, `Mean`, `MetricSet`;
* models: `WalkForwardModel` and `BlockWalkForwardModel` (the protocols), `EwmaNormal`,
  `GarchT`, `Bootstrap`, `baseline_models`;
* the run: `run_asset` (or `run_block` per block of `origin_blocks`, then
  `finish_asset`), `BacktestResult`, `SourceSpec`, and the function
  ``aetheris_ray.evaluation.backtest.backtest`` (not re-exported here: the name is
  its module's);
* reports: `render_report`, `pooled_table`, `score_export`, `read_export`;
* sampling uncertainty: `block_bootstrap` (standard errors of pooled figures).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "pinball_quantile": "scores",
    "crps_ensemble": "scores",
    "coverage_interval": "scores",
    "width": "scores",
    "Sum": "aggregate",
    "Mean": "aggregate",
    "MetricSet": "aggregate",
    "WalkForwardModel": "protocol",
    "BlockWalkForwardModel": "protocol",
    "EwmaNormal": "baselines",
    "GarchT": "baselines",
    "Bootstrap": "baselines",
    "baseline_models": "baselines",
    "BASELINES": "baselines",
    "run_asset": "backtest",
    "run_block": "backtest",
    "finish_asset": "backtest",
    "origin_blocks": "backtest",
    "BacktestResult": "backtest",
    "SourceSpec": "backtest",
    "render_report": "report",
    "pooled_table": "report",
    "score_export": "report",
    "read_export": "report",
    "block_bootstrap": "uncertainty",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"aetheris_ray.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'aetheris_ray.evaluation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
