"""The Python entry points: ``from aetheris_ray import forecast``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from aetheris_ray.config import Settings, load_settings
from aetheris_ray.contract import ForecastRequest, parse_request
from aetheris_ray.data.schema import MarketSource
from aetheris_ray.errors import DataError
from aetheris_ray.result import Forecast


def resolve_source(
    settings: Settings,
    *,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
) -> MarketSource:
    """The data source a command reads: ``--data`` CSV dir, ``--store`` Parquet, ``--synthetic``, else the home store."""
    from aetheris_ray.data import ParquetStore, open_source

    if data is None and store is None and not synthetic:
        path = settings.store_path
        src = ParquetStore(path)
        if not src.assets():
            raise DataError(
                f"the store at {path} holds no assets: run `aetheris ingest --synthetic` (demo data) "
                "or `aetheris ingest --data DIR`, or pass --data DIR / --store PATH"
            )
        return src
    return open_source(data=data, store=store, synthetic=synthetic, seed=seed)


def forecast(
    asset: str | ForecastRequest,
    horizon: int | None = None,
    *,
    as_of: Any = None,
    paths: int | None = None,
    seed: int | None = None,
    quantiles: Sequence[float | str] | str | None = None,
    thresholds: Sequence[float] = (),
    scenario: dict[str, float] | None = None,
    explain: bool = False,
    model: str | None = None,
    source: MarketSource | None = None,
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    settings: Settings | None = None,
) -> Forecast:
    """Forecast one asset.

    Parameters mirror the forecast contract (ARCHITECTURE.md).  The data comes from
    ``source`` when given, else from ``data`` (a CSV file or directory), ``store``
    (a Parquet store), ``synthetic=True`` (the seeded demo market), or the home store.

    Examples
    --------
    >>> fc = forecast("SYN-BTC", 7, synthetic=True, paths=1000, seed=1)  # doctest: +SKIP
    >>> fc.quantile(0.5)  # doctest: +SKIP
    """
    settings = settings or load_settings()
    if isinstance(asset, ForecastRequest):
        req = asset
    else:
        req = parse_request(
            {
                "asset": asset,
                "horizon": horizon if horizon is not None else settings.horizon,
                "as_of": as_of,
                "paths": paths if paths is not None else settings.paths,
                "seed": seed,
                "quantiles": quantiles if quantiles is not None else settings.quantiles,
                "thresholds": list(thresholds),
                "scenario": scenario,
                "explain": explain,
                "model": model,
            }
        )
    src = source or resolve_source(settings, data=data, store=store, synthetic=synthetic)
    return forecast_request(req, src, settings)


def forecast_request(req: ForecastRequest, source: MarketSource, settings: Settings | None = None) -> Forecast:
    """Answer a validated request from a source (the function CLI, Python and Serve share).

    The model is ``req.model`` or else the settings' ``model`` (``"baseline"``); the
    calibration state and fitted components are cached under the settings' home
    (``state/``), so a repeated forecast for the same data is fast; realised prices
    posted back to the service (``state/outcomes.json``) join the calibration.
    """
    from aetheris_ray import engine

    settings = settings or load_settings()
    if req.model is None and settings.model != "baseline":
        req = req.model_copy(update={"model": settings.model})
    from aetheris_ray.outcomes import stored_outcomes

    history = source.history(req.asset, until=req.as_of)
    return engine.forecast(history, req, settings=settings,
                           outcomes=stored_outcomes(settings.state_path, req.asset))
