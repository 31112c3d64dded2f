"""The embedded Parquet store: validated, idempotent, atomic, point-in-time.

Layout (a hive-partitioned pyarrow dataset; docs/data.md "Store layout")::

    <root>/_store.json                                   format marker + version
    <root>/asset=BTC-USD/series=bars_1D/part.parquet     daily bars
    <root>/asset=BTC-USD/series=bars_2h/part.parquet     intraday bars
    <root>/asset=BTC-USD/series=funding/part.parquet     side series (ts, value)
    <root>/asset=_market/series=macro_dxy/part.parquet   market-wide series

Each ``part.parquet`` carries its metadata (kind, cadence, unit, source) as JSON
under the schema-metadata key ``aetheris_ray``.  Bars and side series have
different columns, so read the dataset one ``series`` at a time.

Rules:

* ingest validates every frame and checks every existing partition before it
  writes anything, so a rejected input leaves the store untouched;
* a row known after the time of ingest is refused (`check_not_future`: a daily
  bar dated D is known at its close, D 22:00 UTC, so today's bar is refused until
  then), so a typo such as 2099 can never become the newest close;
* rows are keyed by ``ts``: rows already stored are kept; a new row at a stored
  ``ts`` with different values is not written (the stored value wins, and the
  report says so) -- history that forecasts were made on never changes silently;
* a partition is rewritten only when rows are added, by writing a temporary
  file in the same directory, fsyncing it and ``os.replace``-ing it over
  ``part.parquet`` (`aetheris_ray.atomic.open_atomic`); readers only ever open
  ``part.parquet``, so they see the old file or the new one, never a half-written
  one.  One writer at a time.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray import atomic
from aetheris_ray.data.schema import (
    BAR_COLUMNS,
    MARKET_ASSETS,
    MARKET_RANGE,
    SERIES_COLUMNS,
    AssetData,
    MarketSource,
    SeriesInfo,
    is_market_series,
    with_market_range,
)
from aetheris_ray.data.validation import (
    check_bars,
    check_not_future,
    check_series,
    fmt_time,
    resolve_cutoff,
    unknown_asset,
    utc_now,
)
from aetheris_ray.errors import DataError, DataQualityWarning, InvalidInput

#: Partition ``asset`` value of the market-wide series.
MARKET = "_market"
STORE_FORMAT = "aetheris-ray-parquet-store"
STORE_VERSION = 1
PART = "part.parquet"
META_KEY = b"aetheris_ray"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class PartitionReport:
    """What one ingest did to one ``(asset, series)`` partition.

    Attributes
    ----------
    asset, series : str
        Partition keys (``series`` is ``bars_<cadence>`` or a side-series name).
    rows_added : int
        New rows written.
    rows_present : int
        Rows of the input already stored at the same ``ts`` (not written again).
    warnings : tuple of str
        Conflicts with stored values (the stored value was kept).
    """

    asset: str
    series: str
    rows_added: int
    rows_present: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestReport:
    """The result of `ParquetStore.ingest`.

    Attributes
    ----------
    source : str
        What was ingested.
    partitions : tuple of PartitionReport
        One per partition the input touched, sorted by asset and series.
    notes : tuple of str
        Data-quality notes of the input (gaps, repairs, skipped files).
    """

    source: str
    partitions: tuple[PartitionReport, ...]
    notes: tuple[str, ...] = ()

    @property
    def rows_added(self) -> int:
        """Rows written over all partitions."""
        return sum(p.rows_added for p in self.partitions)

    def lines(self) -> list[str]:
        """Human-readable lines: a summary, one line per partition, then the warnings and notes."""
        n_assets = len({p.asset for p in self.partitions if p.asset != MARKET})
        present = sum(p.rows_present for p in self.partitions)
        out = [
            f"ingested {self.source}: {n_assets} asset(s), {len(self.partitions)} series, "
            f"{self.rows_added} row(s) added, {present} already present"
        ]
        for p in self.partitions:
            out.append(f"  {p.asset:<12} {p.series:<24} +{p.rows_added} new, {p.rows_present} already present")
        out += [f"  warning: {w}" for p in self.partitions for w in p.warnings]
        out += [f"  note: {n}" for n in self.notes]
        return out


@dataclass
class _Plan:
    """One partition's validated input and, once merged, what to write."""

    asset: str
    series: str
    meta: dict[str, Any]
    frame: pd.DataFrame
    merged: pd.DataFrame | None = None
    report: PartitionReport | None = None


#: Recent `ParquetStore.history` reads, keyed by store, asset, cutoff and each partition file's
#: identity (`_stamp`: path, inode, size, modification time), so that a repeated forecast
#: does not re-read unchanged Parquet files (3 ms of a 12 ms warm ``api.forecast`` for
#: BTC-USD) and a rewritten file (an ingest replaces files, never edits them) is read anew.
_READ: OrderedDict[tuple, AssetData] = OrderedDict()
_READ_LOCK = threading.Lock()  # served replicas read from several threads (asyncio.to_thread)
READ_CACHE = 8


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


class ParquetStore:
    """A directory of Parquet partitions implementing `MarketSource`.

    Parameters
    ----------
    path : str or Path
        Store root; created on the first ingest.  An existing non-empty
        directory must be a store (hold ``_store.json``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise InvalidInput(f"store path {str(self.path)!r} is a file; pass a directory")
        marker = self.path / "_store.json"
        if marker.exists():
            info = json.loads(marker.read_text())
            if info.get("format") != STORE_FORMAT or info.get("version") != STORE_VERSION:
                raise DataError(
                    f"{marker}: store format {info.get('format')!r} version {info.get('version')!r}; "
                    f"this version of aetheris-ray reads {STORE_FORMAT!r} version {STORE_VERSION}"
                )
        elif self.path.is_dir() and any(self.path.iterdir()):
            raise InvalidInput(
                f"store path {str(self.path)!r} is a non-empty directory without _store.json; "
                "pass an empty or new directory (a CSV directory is read with data=..., not store=...)"
            )

    def __repr__(self) -> str:
        return f"ParquetStore({str(self.path)!r})"

    # -- reading -----------------------------------------------------------------

    def assets(self) -> list[str]:
        """Every asset with daily bars, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(
            d.name.removeprefix("asset=")
            for d in self.path.glob("asset=*")
            if d.name != f"asset={MARKET}" and (d / "series=bars_1D" / PART).is_file()
        )

    def series_names(self, asset: str) -> list[str]:
        """Partition names of ``asset`` (``bars_<cadence>`` and side series, market-wide included), sorted."""
        self._require(asset)
        return sorted(name for _, name, _ in self._partitions(asset))

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """All data of ``asset`` with ``ts <= cutoff_for(until)`` (everything when None).

        The cutoff is applied as a Parquet filter on ``ts``, so later rows are
        never read.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        cutoff = resolve_cutoff(until)
        if cutoff is not None and cutoff > pd.Timestamp.max.tz_localize("UTC"):
            cutoff = None  # past 2262 (e.g. 9999-12-31): later than any stored ts, and no ns filter can hold it
        self._require(asset)
        parts = self._partitions(asset)
        daily = {a: self.path / f"asset={a}" / "series=bars_1D" / PART for a in MARKET_ASSETS}
        market = next((a for a, path in daily.items() if path.is_file()), None)
        if market is not None and market != asset:  # the market's range (`with_market_range`)
            parts.append((market, "bars_1D", daily[market]))
        key = (str(self.path.resolve()), asset, cutoff, tuple((name, _stamp(path)) for _, name, path in parts))
        with _READ_LOCK:
            data = _READ.get(key)
            if data is not None:
                _READ.move_to_end(key)  # most recently used last
        if data is None:
            bars: dict[str, pd.DataFrame] = {}
            series: dict[str, pd.DataFrame] = {}
            info: dict[str, SeriesInfo] = {}
            market_daily = None
            for owner, name, path in parts:
                filters = None if cutoff is None else [("ts", "<=", pa.scalar(cutoff, type=pa.timestamp("ns", "UTC")))]
                table = pq.read_table(path, filters=filters)
                meta = _meta(table.schema.metadata, path)
                frame = table.to_pandas()
                if owner == market and name == "bars_1D":
                    market_daily = frame
                if owner not in (asset, MARKET):
                    continue
                if meta["kind"] == "bars":
                    bars[name.removeprefix("bars_")] = frame.loc[:, list(BAR_COLUMNS)]
                else:
                    series[name] = frame.loc[:, list(SERIES_COLUMNS)]
                    info[name] = SeriesInfo(name, meta["unit"], meta["cadence"], meta["source"])
            data = with_market_range(AssetData(asset=asset, bars=bars, series=series, info=info), market_daily, market)
            with _READ_LOCK:
                _READ[key] = data
                while len(_READ) > READ_CACHE:
                    _READ.popitem(last=False)
        # copies: a caller that changes its frames must not change the next caller's
        return AssetData(asset=asset, bars={k: v.copy() for k, v in data.bars.items()},
                         series={k: v.copy() for k, v in data.series.items()}, info=dict(data.info))

    def _require(self, asset: str) -> None:
        if asset not in self.assets():
            raise unknown_asset(asset, self.assets(), f"store {self.path}")

    def _partitions(self, asset: str) -> list[tuple[str, str, Path]]:
        """``(asset_key, series, path)`` of every readable partition of ``asset`` and the market."""
        out = []
        for key in (asset, MARKET):
            for d in sorted((self.path / f"asset={key}").glob("series=*")):
                if (d / PART).is_file():
                    out.append((key, d.name.removeprefix("series="), d / PART))
        return out

    # -- writing -----------------------------------------------------------------

    def ingest(self, source: MarketSource | str | Path) -> IngestReport:
        """Validate ``source`` and add its rows to the store, idempotently.

        Parameters
        ----------
        source : MarketSource, str or Path
            A source (CSV, synthetic, exchange, another store) or a CSV
            file/directory path (read with `CsvSource`).

        Returns
        -------
        IngestReport
            Rows added / already present per partition, conflicts and the
            source's data-quality notes (which are reported here, not warned).

        Raises
        ------
        DataError
            When any input frame breaks a validation rule or disagrees with a
            stored partition's unit or cadence; nothing is written then.
        """
        if isinstance(source, (str, Path)):
            from aetheris_ray.data.csv_connector import CsvSource

            source = CsvSource(source)
        if not isinstance(source, MarketSource):
            raise InvalidInput(f"ingest(source={source!r}): expected a MarketSource or a CSV file/directory path")
        label = repr(source)
        plans, notes = self._collect(source)
        for plan in plans:
            self._merge(plan, label)
        self._write_marker()
        for plan in plans:
            if plan.merged is not None:
                self._write(plan.asset, plan.series, plan.merged, plan.meta)
        reports = tuple(p.report for p in plans if p.report is not None)
        return IngestReport(label, reports, tuple(notes))

    def _collect(self, source: MarketSource) -> tuple[list[_Plan], list[str]]:
        """Read and validate everything the source holds (nothing written yet)."""
        plans: dict[tuple[str, str], _Plan] = {}
        now = utc_now()  # the time of ingest: rows known later than this are refused
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for asset in source.assets():
                if not _NAME.fullmatch(asset) or asset == MARKET:
                    raise DataError(f"{source!r}: asset name {asset!r} cannot be stored; use letters, digits, ._-")
                data = source.history(asset)
                for key, bars in data.bars.items():
                    if bars.empty:
                        continue
                    name, cadence = f"bars_{key}", key.split("_")[0]
                    meta = {"kind": "bars", "cadence": cadence, "unit": "price", "source": repr(source)}
                    checked = check_bars(bars, f"{source!r} asset={asset} series={name}", cadence=cadence)
                    check_not_future(checked.frame["ts"], f"{source!r} asset={asset} series={name}", now=now)
                    plans[(asset, name)] = _Plan(asset, name, meta, checked.frame)
                for name, frame in data.series.items():
                    owner = MARKET if is_market_series(name) else asset
                    if (owner, name) in plans or frame.empty or name == MARKET_RANGE:  # derived when read
                        continue
                    si = data.info.get(name) or SeriesInfo(name, "unknown", "1D")
                    meta = {"kind": "series", "cadence": si.cadence, "unit": si.unit, "source": si.source}
                    checked = check_series(frame, f"{source!r} asset={owner} series={name}", cadence=si.cadence)
                    check_not_future(checked.frame["ts"], f"{source!r} asset={owner} series={name}", now=now)
                    plans[(owner, name)] = _Plan(owner, name, meta, checked.frame)
        notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, DataQualityWarning)))
        for w in caught:
            if not issubclass(w.category, DataQualityWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return [plans[k] for k in sorted(plans)], notes

    def _merge(self, plan: _Plan, label: str) -> None:
        """Merge a plan with its stored partition (existing rows win); decide whether to write."""
        import pyarrow.parquet as pq

        path = self._part(plan.asset, plan.series)
        new = plan.frame
        if not path.is_file():
            plan.merged = new
            plan.report = PartitionReport(plan.asset, plan.series, len(new), 0)
            return
        table = pq.read_table(path)
        stored_meta = _meta(table.schema.metadata, path)
        for key in ("kind", "cadence", "unit"):
            if stored_meta[key] != plan.meta[key]:
                raise DataError(
                    f"{label} asset={plan.asset} series={plan.series}: {key} {plan.meta[key]!r} differs from "
                    f"the stored {stored_meta[key]!r} ({path}); ingest it under another name or into a new store"
                )
        plan.meta = stored_meta
        old = table.to_pandas()
        new_ts = pd.DatetimeIndex(new["ts"])
        present = new_ts.isin(pd.DatetimeIndex(old["ts"]))
        cols = [c for c in new.columns if c != "ts"]
        conflicts: tuple[str, ...] = ()
        if present.any():
            stored = old.set_index("ts").loc[new_ts[present], cols].to_numpy(dtype=float)
            incoming = new.loc[present, cols].to_numpy(dtype=float)
            differ = ~np.all((stored == incoming) | (np.isnan(stored) & np.isnan(incoming)), axis=1)
            if differ.any():
                first = new_ts[present][int(np.flatnonzero(differ)[0])]
                conflicts = (
                    f"{plan.asset} {plan.series}: {int(differ.sum())} row(s) differ from the stored values at the "
                    f"same time (first at {fmt_time(first)} UTC); kept the stored values",
                )
        added = new[~present]
        plan.report = PartitionReport(plan.asset, plan.series, len(added), int(present.sum()), conflicts)
        if len(added):
            merged = pd.concat([old, added], ignore_index=True).sort_values("ts", kind="stable")
            plan.merged = merged.reset_index(drop=True)

    def _part(self, asset: str, series: str) -> Path:
        return self.path / f"asset={asset}" / f"series={series}" / PART

    def _write(self, asset: str, series: str, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        schema_meta = dict(table.schema.metadata or {})
        schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
        table = table.replace_schema_metadata(schema_meta)
        with atomic.open_atomic(self._part(asset, series)) as fh:  # 0o644, fsynced, renamed over part.parquet
            pq.write_table(table, fh)

    def _write_marker(self) -> None:
        marker = self.path / "_store.json"
        if not marker.exists():
            body = json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION}, indent=1).encode()
            atomic.write_bytes(marker, body)


def _meta(raw: dict[bytes, bytes] | None, path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((raw or {})[META_KEY]))
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: no aetheris_ray metadata; the file was not written by ParquetStore") from exc
