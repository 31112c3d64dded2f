"""CSV connector: a user's own export, one file or a directory laid out like shared/data.

File -> asset/series mapping (docs/data.md has the full table):

* ``daily/<ASSET>.csv`` -> bars ``"1D"`` of ``<ASSET>`` (the stem);
* ``intraday/<BASE>-<QUOTE>_<venue>_<cadence>.csv`` -> bars ``<cadence>`` of
  `asset_for_pair` ``(BASE, QUOTE)``; when several venues give the same cadence
  the preferred one (`PRIMARY_VENUE`, else alphabetical) keeps the plain key and
  the others get ``<cadence>_<venue>`` (venues are never spliced together);
* side series by the patterns of `RULES` (``derivatives/``, ``macro/``,
  ``onchain/``); ``macro_*``/``market_*`` series are market-wide and attached
  to every asset;
* the ``*.csv`` files of a flat directory (one without those folders), or a
  single file, are bars of the asset named by the stem (daily when the time column is ``date``, intraday when
  it is ``timestamp``; an asset with intraday bars only gets daily bars
  aggregated to the 22:00 UTC close).

Nothing is parsed until `CsvSource.history` asks for an asset; parsed frames
are cached per instance, and their data-quality notes are warned once.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from aetheris_ray.data.chains import attach_chain, chain_path, read_chain_csv
from aetheris_ray.data.schema import (
    MARKET_ASSETS,
    AssetData,
    SeriesInfo,
    asset_for_pair,
    bar_ts_from_dates,
    bar_ts_from_open,
    copy_frames,
    daily_bars_from_intraday,
    is_market_series,
    series_ts_from_dates,
    with_market_range,
)
from aetheris_ray.data.validation import (
    check_bars,
    check_not_future,
    check_columns,
    check_series,
    parse_times,
    resolve_cutoff,
    to_numeric,
    unknown_asset,
    warn_notes,
)
from aetheris_ray.errors import DataError, DataQualityWarning, InvalidInput

#: Venue whose bars / series keep the plain key when several venues offer the same one.
PRIMARY_VENUE = "binance"
#: Largest distance between a basis value and the daily close used to express it as a fraction.
BASIS_CLOSE_TOLERANCE = pd.Timedelta(days=3)
_AUTO = ""  # bars key resolved from the file (single / top-level files)
_TICKER = r"(?P<base>[A-Za-z0-9]+)"
_PAIR = rf"{_TICKER}-(?P<quote>[A-Za-z0-9]+)"
_CADENCE = r"(?P<cad>\d+(?:min|h|D))"
_INTRADAY = re.compile(rf"{_PAIR}_(?P<venue>[A-Za-z0-9]+)_{_CADENCE}")
_MACRO_UNITS = {"dxy": "index", "spx": "index points", "gold": "USD/troy oz"}


@dataclass(frozen=True)
class Rule:
    """How one kind of side-series file maps to a canonical series.

    ``name``, ``unit`` and ``cadence`` are templates filled from the regex groups
    (``{cad}``, ``{name}`` lower-cased, ``{unit}`` from the macro unit table).
    ``time_kind`` ``"date"`` means a daily value known at the end of its UTC day
    (``ts = D+1 00:00``); ``"timestamp"`` means ``ts`` is the given time.
    ``scale`` converts the file's unit to ``unit``.
    """

    folder: str
    pattern: re.Pattern[str]
    name: str
    column: str
    unit: str
    cadence: str
    time_kind: str = "date"
    scale: float = 1.0
    positive: bool = False
    basis: bool = False


RULES = (
    Rule("derivatives", re.compile(rf"{_PAIR}_(?P<venue>[A-Za-z0-9]+)_funding_{_CADENCE}"),
         "funding_{cad}", "funding_rate", "fraction/{cad}", "{cad}", time_kind="timestamp"),
    # The "daily pct" column is the day's mean 8-hourly rate in percent (its median
    # ratio to Binance's 8h mean is 1.00): x 3 settlements / 100 -> fraction per day.
    Rule("derivatives", re.compile(rf"{_TICKER}_funding_daily_aggregate"),
         "funding", "funding_rate_daily_pct", "fraction/day", "1D", scale=3 / 100),
    Rule("derivatives", re.compile(rf"{_TICKER}_(?P<venue>[A-Za-z0-9]+)_dvol_daily"),
         "implied_vol", "dvol", "percent/year", "1D", positive=True),
    Rule("derivatives", re.compile(rf"{_TICKER}_perp_basis_daily"),
         "basis", "basis_spread", "fraction of spot", "1D", basis=True),
    Rule("macro", re.compile(r"(?P<name>[A-Za-z0-9]+)_daily"),
         "macro_{name}", "close", "{unit}", "1B", positive=True),
    Rule("onchain", re.compile(rf"{_TICKER}_txcount_daily"),
         "onchain_tx_count", "tx_count", "transactions/day", "1D", positive=True),
    Rule("onchain", re.compile(r"(?P<name>[A-Za-z0-9]+)_dominance_daily"),
         "market_{name}_dominance", "dominance_pct", "percent of total crypto market cap", "1D", positive=True),
    Rule("onchain", re.compile(r"(?P<name>[A-Za-z0-9]+)_marketcap_daily"),
         "market_{name}_mcap", "market_cap_usd", "USD", "1D", positive=True),
)
FOLDERS = ("daily", "intraday", "derivatives", "macro", "onchain")
#: File names each folder accepts (quoted when a name claims a kind but matches no pattern).
NAME_PATTERNS = {
    "intraday": "<BASE>-<QUOTE>_<venue>_<cadence>.csv",
    "derivatives": "<BASE>-<QUOTE>_<venue>_funding_<cadence>.csv, <BASE>_funding_daily_aggregate.csv, "
                   "<BASE>_<venue>_dvol_daily.csv, <BASE>_perp_basis_daily.csv",
    "onchain": "<BASE>_txcount_daily.csv, <NAME>_dominance_daily.csv, <NAME>_marketcap_daily.csv",
}
#: A CSV whose name matches no pattern of its folder but contains one of these words
#: claims to be that folder's kind of file: malformed (an error), not an unknown file
#: (skipped with a warning).  Every CSV of intraday/ claims to be bars.
_CLAIMS = {
    "intraday": re.compile(r""),
    "derivatives": re.compile(r"funding|dvol|basis", re.IGNORECASE),
    "onchain": re.compile(r"tx_?count|dominance|market_?cap", re.IGNORECASE),
}


@dataclass(frozen=True)
class _BarsFile:
    """One mapped bars file (not parsed yet)."""

    path: Path
    source: str  # path relative to the root, recorded in messages and SeriesInfo.source
    asset: str
    key: str  # cadence key; _AUTO: from the file
    cadence: str | None = None  # None: from the file
    time_kind: str | None = None  # "date" / "timestamp"; None: from the header
    venue: str = ""


@dataclass(frozen=True)
class _SeriesFile:
    """One mapped side-series file (not parsed yet)."""

    path: Path
    source: str
    asset: str | None  # None: market-wide
    key: str  # series name
    cadence: str
    rule: Rule
    venue: str = ""


_File = _BarsFile | _SeriesFile


@dataclass
class _Index:
    bars: dict[str, dict[str, _BarsFile]] = field(default_factory=dict)
    series: dict[str, dict[str, _SeriesFile]] = field(default_factory=dict)
    market: dict[str, _SeriesFile] = field(default_factory=dict)


class CsvSource:
    """Market data from CSV files, implementing `MarketSource`.

    Parameters
    ----------
    path : str or Path
        A CSV file (asset = file stem), a directory laid out like
        ``shared/data`` (``daily/``, ``intraday/``, ``derivatives/``, ``macro/``,
        ``onchain/``), or a flat directory of ``<ASSET>.csv`` files.

    Raises
    ------
    InvalidInput
        When ``path`` does not exist or is neither a file nor a directory (e.g. ``/dev/null``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InvalidInput(f"data path {str(self.path)!r} does not exist; pass a CSV file or a data directory")
        if not (self.path.is_file() or self.path.is_dir()):
            raise InvalidInput(f"data path {str(self.path)!r} is neither a CSV file nor a directory; "
                               "pass a CSV file or a data directory")
        self._index_cache: _Index | None = None
        self._bars_cache: dict[Path, tuple[pd.DataFrame, str]] = {}
        self._series_cache: dict[Path, tuple[pd.DataFrame, SeriesInfo]] = {}
        self._chain_cache: dict[Path, pd.DataFrame] = {}

    def __repr__(self) -> str:
        return f"CsvSource({str(self.path)!r})"

    def assets(self) -> list[str]:
        """Every asset with bars, sorted (lists file names; parses nothing)."""
        return sorted(self._index().bars)

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """All data of ``asset`` known at ``cutoff_for(until)`` (everything when None).

        Parses only this asset's files and the market-wide ones (cached).

        Raises
        ------
        UnknownAsset
            When no file maps to ``asset``.
        DataError
            When one of its files breaks a validation rule.
        """
        cutoff = resolve_cutoff(until)
        index = self._index()
        if asset not in index.bars:
            raise unknown_asset(asset, index.bars, str(self.path))
        bars: dict[str, pd.DataFrame] = {}
        for key, spec in index.bars[asset].items():
            frame, cadence = self._bars(spec)
            bars[key or str(cadence)] = frame
        if "1D" not in bars:
            finest = min(bars, key=lambda k: pd.Timedelta(k.split("_")[0]))
            bars["1D"] = daily_bars_from_intraday(bars[finest], finest.split("_")[0])
        series: dict[str, pd.DataFrame] = {}
        info: dict[str, SeriesInfo] = {}
        for name, spec in {**index.series.get(asset, {}), **index.market}.items():
            frame, meta = self._series(spec, bars["1D"])
            series[name], info[name] = frame, meta
        market = next((a for a in MARKET_ASSETS if a in index.bars), None)
        daily = bars["1D"] if market == asset else self._daily(index, market)
        data = AssetData(asset=asset, bars=bars, series=series, info=info)
        data = copy_frames(with_market_range(data, daily, market))
        chain = chain_path(self.path, asset) if self.path.is_dir() else None
        if chain is not None and chain.is_file():  # options/<ASSET>.csv (aetheris_ray.data.chains)
            if chain not in self._chain_cache:
                self._chain_cache[chain] = read_chain_csv(chain)
            data = attach_chain(data, self._chain_cache[chain], f"options/{chain.name}")
        return data if cutoff is None else data.until(cutoff)

    def _daily(self, index: "_Index", asset: str | None) -> pd.DataFrame | None:
        """``asset``'s daily bars (parsed once), or None without a daily file."""
        for spec in (index.bars.get(asset) or {}).values():
            frame, cadence = self._bars(spec)
            if str(cadence) == "1D":
                return frame
        return None

    # -- mapping -----------------------------------------------------------------

    def _index(self) -> _Index:
        if self._index_cache is None:
            self._index_cache = self._scan_file() if self.path.is_file() else self._scan_dir()
        return self._index_cache

    def _scan_file(self) -> _Index:
        index = _Index()
        spec = _top_level(self.path, self.path.name)
        index.bars[spec.asset] = {spec.key: spec}
        return index

    def _scan_dir(self) -> _Index:
        index = _Index()
        candidates: list[_File] = []
        nested = any((self.path / folder).is_dir() for folder in FOLDERS)
        for entry in sorted(self.path.iterdir()):
            if entry.is_file() and entry.suffix.lower() == ".csv":
                if nested:
                    warnings.warn(
                        f"{entry}: skipped, top-level CSV files are read only when there are no {'/, '.join(FOLDERS)}/ "
                        "folders; move it to daily/ or intraday/",
                        DataQualityWarning,
                        stacklevel=4,
                    )
                else:
                    candidates.append(_top_level(entry, entry.name))
        for folder in FOLDERS:
            base = self.path / folder
            if not base.is_dir():
                continue
            for entry in sorted(base.iterdir()):
                if entry.name.startswith("."):
                    continue
                spec = _map_file(entry, f"{folder}/{entry.name}", folder)
                if spec is None:
                    claim = _CLAIMS.get(folder)
                    if entry.suffix.lower() == ".csv" and entry.is_file() and claim and claim.search(entry.stem):
                        raise DataError(
                            f"{entry}: the name matches none of the {folder}/ patterns "
                            f"({NAME_PATTERNS[folder]}); rename it (docs/data.md) or move it out of {folder}/"
                        )
                    warnings.warn(
                        f"{entry}: skipped, the name matches no known pattern of {folder}/ (see docs/data.md)",
                        DataQualityWarning,
                        stacklevel=4,
                    )
                else:
                    candidates.append(spec)
        for spec in _resolve_venues(candidates):
            self._place(index, spec)
        orphans = sorted(set(index.series) - set(index.bars))
        for asset in orphans:
            files = ", ".join(f.source for f in index.series.pop(asset).values())
            warnings.warn(f"{files}: no bars for asset {asset!r}; file(s) not used", DataQualityWarning, stacklevel=4)
        return index

    @staticmethod
    def _place(index: _Index, spec: _File) -> None:
        table: dict[str, _BarsFile] | dict[str, _SeriesFile]
        if isinstance(spec, _BarsFile):
            table = index.bars.setdefault(spec.asset, {})
        elif spec.asset is None:
            table = index.market
        else:
            table = index.series.setdefault(spec.asset, {})
        if spec.key in table:
            warnings.warn(
                f"{spec.path}: skipped, {spec.asset or 'market'} {spec.key or 'bars'} already comes from "
                f"{table[spec.key].source}",
                DataQualityWarning,
                stacklevel=5,
            )
            return
        table[spec.key] = spec  # type: ignore[assignment]

    # -- parsing -----------------------------------------------------------------

    def _bars(self, spec: _BarsFile) -> tuple[pd.DataFrame, str]:
        if spec.path not in self._bars_cache:
            raw, lines = _read_csv(spec.path)
            where = str(spec.path)
            kind = spec.time_kind or ("date" if "date" in raw.columns else "timestamp")
            check_columns(list(raw.columns), [kind, "open", "high", "low", "close"], ["volume"], where)
            times = parse_times(raw[kind], kind, where, lines, kind)
            frame = pd.DataFrame({"ts": times})
            for col in ("open", "high", "low", "close", "volume"):
                if col in raw.columns:
                    frame[col] = to_numeric(raw[col], col, where, lines)
            cadence = "1D" if kind == "date" else (spec.cadence or _infer_cadence(times, where))
            known = bar_ts_from_dates(times) if kind == "date" else bar_ts_from_open(times, cadence)
            check_not_future(known, where, lines, raw[kind])
            checked = check_bars(frame, where, lines, cadence)
            out = checked.frame
            out["ts"] = bar_ts_from_dates(out["ts"]) if kind == "date" else bar_ts_from_open(out["ts"], cadence)
            warn_notes(checked.notes, stacklevel=3)
            self._bars_cache[spec.path] = (out, cadence)
        return self._bars_cache[spec.path]

    def _series(self, spec: _SeriesFile, daily: pd.DataFrame) -> tuple[pd.DataFrame, SeriesInfo]:
        if spec.path not in self._series_cache:
            rule = spec.rule
            raw, lines = _read_csv(spec.path)
            where = str(spec.path)
            time_col = rule.time_kind
            check_columns(list(raw.columns), [time_col, rule.column], [], where)
            times = parse_times(raw[time_col], rule.time_kind, where, lines, time_col)
            check_not_future(series_ts_from_dates(times) if rule.time_kind == "date" else times, where, lines,
                             raw[time_col])
            frame = pd.DataFrame({"ts": times, rule.column: to_numeric(raw[rule.column], rule.column, where, lines)})
            checked = check_series(frame, where, lines, spec.cadence, rule.column, rule.positive)
            out = checked.frame
            out["value"] = out["value"] * rule.scale
            if rule.time_kind == "date":
                out["ts"] = series_ts_from_dates(out["ts"])
            info = SeriesInfo(spec.key, _unit(rule, spec), spec.cadence, spec.source)
            notes = list(checked.notes)
            if rule.basis:
                out, info, note = _basis_fraction(out, daily, info, where)
                notes += [note] if note else []
            warn_notes(notes, stacklevel=3)
            self._series_cache[spec.path] = (out, info)
        return self._series_cache[spec.path]


def _top_level(path: Path, source: str) -> _BarsFile:
    """A single bars file: asset from the stem (a pair pattern maps like intraday/)."""
    match = _INTRADAY.fullmatch(path.stem)
    if match:
        return _BarsFile(path, source, asset_for_pair(match["base"], match["quote"]), _AUTO, match["cad"], "timestamp")
    return _BarsFile(path, source, path.stem, _AUTO)


def _map_file(path: Path, source: str, folder: str) -> _File | None:
    """Map a file of a known folder, or None when its name matches no pattern."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    stem = path.stem
    if folder == "daily":
        return _BarsFile(path, source, stem, "1D", "1D", "date")
    if folder == "intraday":
        m = _INTRADAY.fullmatch(stem)
        if not m:
            return None
        asset = asset_for_pair(m["base"], m["quote"])
        return _BarsFile(path, source, asset, m["cad"], m["cad"], "timestamp", m["venue"])
    for rule in RULES:
        m = rule.pattern.fullmatch(stem) if rule.folder == folder else None
        if m:
            groups = {k: (v.lower() if k == "name" else v) for k, v in m.groupdict().items() if v}
            name = rule.name.format(**groups)
            asset = None if is_market_series(name) else asset_for_pair(groups["base"], groups.get("quote", "USD"))
            return _SeriesFile(path, source, asset, name, rule.cadence.format(**groups), rule, groups.get("venue", ""))
    return None


def _resolve_venues(specs: list[_File]) -> list[_File]:
    """Keep the plain key for the preferred venue; suffix the others with ``_<venue>``."""
    groups: dict[tuple[str | None, str, bool], list[_File]] = {}
    for spec in specs:
        groups.setdefault((spec.asset, spec.key, isinstance(spec, _BarsFile)), []).append(spec)
    out: list[_File] = []
    for group in groups.values():
        ranked = sorted(group, key=lambda s: (s.venue.lower() != PRIMARY_VENUE, s.venue.lower(), s.source))
        out.append(ranked[0])
        for spec in ranked[1:]:
            key = f"{spec.key}_{spec.venue.lower()}" if spec.venue and spec.key else spec.key
            out.append(replace(spec, key=key))
    return out


def _read_csv(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV with lower-cased column names; return it and each row's 1-based line number."""
    where = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader([fh.readline()]), [])
        if not any(h.strip() for h in header):
            raise DataError(f"{where}: empty file (no header, no rows)")
        time_cols = {h: str for h in header if h.strip().lower() in ("date", "timestamp")}
        raw = pd.read_csv(path, skip_blank_lines=False, dtype=time_cols, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{where}: cannot read the file as CSV ({reason})") from exc
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    keep = raw.notna().any(axis=1).to_numpy()
    lines = np.flatnonzero(keep) + 2
    return raw[keep].reset_index(drop=True), lines


def _infer_cadence(times: pd.DatetimeIndex, where: str) -> str:
    """The cadence of intraday bars as an offset alias, from the median step."""
    steps = np.diff(times.asi8)
    if not (steps > 0).any():
        raise DataError(f"{where}: cannot infer the bar cadence (fewer than two distinct times)")
    step = pd.Timedelta(int(np.median(steps[steps > 0])), unit="ns")
    for unit, alias in ((pd.Timedelta(days=1), "D"), (pd.Timedelta(hours=1), "h"), (pd.Timedelta(minutes=1), "min")):
        if step % unit == pd.Timedelta(0):
            return f"{step // unit}{alias}"
    raise DataError(f"{where}: bar cadence {step} is not a whole number of minutes")


def _unit(rule: Rule, spec: _SeriesFile) -> str:
    name = spec.key.removeprefix("macro_")
    return rule.unit.format(cad=spec.cadence, unit=_MACRO_UNITS.get(name, "level"))


def _basis_fraction(
    basis: pd.DataFrame, daily: pd.DataFrame, info: SeriesInfo, where: str
) -> tuple[pd.DataFrame, SeriesInfo, str | None]:
    """Express a USD basis as a fraction of spot: divide by the latest daily close known at ``ts``.

    A value dated D (``ts = D+1 00:00``) uses the close of D (``ts = D 22:00``),
    else the newest earlier close within `BASIS_CLOSE_TOLERANCE`; values without
    one are dropped (noted).  When no value has a close the series stays in USD.
    """
    closes = daily.loc[:, ["ts", "close"]]
    merged = pd.merge_asof(basis, closes, on="ts", direction="backward", tolerance=BASIS_CLOSE_TOLERANCE)
    has_close = merged["close"].notna().to_numpy()
    if not has_close.any():
        usd = SeriesInfo(info.name, "USD", info.cadence, info.source)
        return basis, usd, f"{where}: no daily close near any basis value; basis kept in USD"
    out = pd.DataFrame({"ts": merged["ts"][has_close], "value": (merged["value"] / merged["close"])[has_close]})
    dropped = int((~has_close).sum())
    note = f"{where}: dropped {dropped} basis value(s) with no daily close within 3 days" if dropped else None
    return out.reset_index(drop=True), info, note


