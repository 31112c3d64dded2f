"""Aetheris-Ray: calibrated probabilistic forecasts of crypto prices.

The public API is imported lazily so that ``import aetheris_ray`` (and the CLI's
start-up) stays cheap: nothing here imports torch, ray or ccxt.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

__all__ = ["forecast", "backtest", "Forecast", "BacktestResult", "ForecastRequest", "Settings", "load_settings",
           "__version__"]

_LAZY = {
    "forecast": ("aetheris_ray.api", "forecast"),
    "backtest": ("aetheris_ray.api", "backtest"),
    "Forecast": ("aetheris_ray.result", "Forecast"),
    "BacktestResult": ("aetheris_ray.evaluation.backtest", "BacktestResult"),
    "ForecastRequest": ("aetheris_ray.contract", "ForecastRequest"),
    "Settings": ("aetheris_ray.config", "Settings"),
    "load_settings": ("aetheris_ray.config", "load_settings"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'aetheris_ray' has no attribute {name!r}")
