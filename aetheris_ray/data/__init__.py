"""The data layer: connectors, validation and the Parquet store (docs/data.md).

Every source implements `MarketSource` (``assets()``, ``history(asset, until)``)
and returns `AssetData` in the one vocabulary of `schema`.  Importing this
package imports pandas and numpy only; pyarrow and ccxt are imported by the
functions that need them.
"""

from __future__ import annotations

from pathlib import Path

from aetheris_ray.data.csv_connector import CsvSource
from aetheris_ray.data.exchange import ExchangeSource
from aetheris_ray.data.schema import (
    BAR_COLUMNS,
    SERIES_COLUMNS,
    SIDE_SERIES,
    AssetData,
    MarketSource,
    SeriesInfo,
    cutoff_for,
)
from aetheris_ray.data.store import IngestReport, ParquetStore, PartitionReport
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.errors import InvalidInput


def open_source(
    data: str | Path | None = None,
    store: str | Path | None = None,
    synthetic: bool = False,
    seed: int = 0,
) -> MarketSource:
    """The one data source named by the arguments.

    Parameters
    ----------
    data : str or Path, optional
        A CSV file or directory (`CsvSource`).
    store : str or Path, optional
        A Parquet store directory (`ParquetStore`).
    synthetic : bool
        The seeded synthetic market (`SyntheticSource`).
    seed : int
        Seed of the synthetic market (ignored otherwise).

    Raises
    ------
    InvalidInput
        When none, or more than one, of ``data``, ``store`` and ``synthetic`` is given.

    Examples
    --------
    >>> open_source(synthetic=True, seed=3)
    SyntheticSource(seed=3, assets=('SYN-BTC', 'SYN-ETH', 'SYN-ALT'))
    """
    given = [name for name, on in (("data", data is not None), ("store", store is not None), ("synthetic", synthetic)) if on]
    if len(given) != 1:
        which = "none was" if not given else f"{' and '.join(given)} were"
        raise InvalidInput(
            f"give exactly one data source (data=CSV path, store=Parquet store or synthetic=True); {which} given"
        )
    if data is not None:
        return CsvSource(data)
    if store is not None:
        return ParquetStore(store)
    return SyntheticSource(seed=seed)


__all__ = [
    "BAR_COLUMNS",
    "SERIES_COLUMNS",
    "SIDE_SERIES",
    "AssetData",
    "CsvSource",
    "ExchangeSource",
    "IngestReport",
    "MarketSource",
    "ParquetStore",
    "PartitionReport",
    "SeriesInfo",
    "SyntheticSource",
    "cutoff_for",
    "open_source",
]
