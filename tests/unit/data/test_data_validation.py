"""One test per validation rule: the exact one-line message, and a store left byte-for-byte unchanged.

Each bad file sits in a directory next to a good new asset (``AAA-USD``, sorted
first), so a store that wrote as it went would have written ``AAA-USD`` before
meeting the bad file.
"""

from __future__ import annotations

import re
import warnings

import pandas as pd
import pytest

from aetheris_ray.data import CsvSource, ParquetStore
from aetheris_ray.data.validation import OC_TOLERANCE, check_bars, check_series
from aetheris_ray.errors import DataError, DataQualityWarning, UnknownAsset

HEAD = "date,open,high,low,close,volume\n"
ROW1 = "2024-01-01,100,110,90,105,1000\n"
ROW2 = "2024-01-02,105,112,101,108,1200\n"
ROW3 = "2024-01-03,108,115,104,110,900\n"

# (rule, folder/file, content, expected message after the file path)
CASES = [
    ("unparseable-date", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-13-02,105,112,101,108,1200\n",
     "line 3: unparseable date '2024-13-02' in column 'date' (expected YYYY-MM-DD)"),
    ("unparseable-timestamp", "intraday/ZZZ-USDT_binance_2h.csv",
     "timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,1,1,1,1,1\nyesterday,1,1,1,1,1\n",
     "line 3: unparseable timestamp 'yesterday' in column 'timestamp' (expected YYYY-MM-DD HH:MM:SS (UTC))"),
    ("date-with-time", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02 13:00,105,112,101,108,1200\n",
     "line 3: date '2024-01-02 13:00' in column 'date' has a time of day; daily files take plain dates (YYYY-MM-DD)"),
    ("non-positive-price", "daily/ZZZ-USD.csv", HEAD + ROW1 + ROW2 + "2024-01-03,108,115,104,0,900\n",
     "line 4: non-positive price 0 in column 'close'"),
    ("nan-price", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,,112,101,108,1200\n",
     "line 3: missing (NaN) price in column 'open'"),
    ("non-numeric", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,105,1l2,101,108,1200\n",
     "line 3: non-numeric value '1l2' in column 'high'"),
    ("high-below-low", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,100,90,95,92,1200\n",
     "line 3: high 90 is below low 95"),
    ("close-outside-range", "daily/ZZZ-USD.csv", HEAD + "2024-01-01,100,110,90,120,1000\n",
     f"line 2: close 120 is above high 110 (more than {OC_TOLERANCE:.1%} outside [low, high])"),
    ("open-outside-range", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,80,112,101,108,1200\n",
     f"line 3: open 80 is below low 101 (more than {OC_TOLERANCE:.1%} outside [low, high])"),
    ("negative-volume", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,105,112,101,108,-5\n",
     "line 3: negative volume -5 in column 'volume'"),
    ("unsorted", "daily/ZZZ-USD.csv", HEAD + ROW1 + ROW3 + ROW2,
     "line 4: time 2024-01-02 is earlier than the previous row's 2024-01-03; rows must be sorted by time"),
    ("conflicting-duplicate", "daily/ZZZ-USD.csv", HEAD + ROW1 + ROW2 + "2024-01-02,105,112,101,109,1200\n",
     "line 4: duplicate time 2024-01-02 (also on line 3) with different values; keep one row per time"),
    ("empty-file", "daily/ZZZ-USD.csv", "", "empty file (no header, no rows)"),
    ("header-only", "daily/ZZZ-USD.csv", HEAD, "empty file (no data rows)"),
    ("missing-columns", "daily/ZZZ-USD.csv", "date,open,close\n2024-01-01,1,1\n",
     "missing column(s) high,low; expected columns date,open,high,low,close[,volume]"),
    ("wrong-columns", "daily/ZZZ-USD.csv", "day,price\n2024-01-01,1\n",
     "missing column(s) date,open,high,low,close; expected columns date,open,high,low,close[,volume] (found day,price)"),
    ("malformed-csv", "daily/ZZZ-USD.csv", HEAD + ROW1 + "2024-01-02,105,112,101,108,1200,7,8\n",
     "cannot read the file as CSV (Error tokenizing data. C error: Expected 6 fields in line 3, saw 8)"),
    ("series-missing-value", "derivatives/ZZZ_deribit_dvol_daily.csv", "date,dvol\n2024-01-01,50\n2024-01-02,\n",
     "line 3: missing or non-finite value in column 'dvol'"),
    ("series-non-positive-level", "derivatives/ZZZ_deribit_dvol_daily.csv", "date,dvol\n2024-01-01,50\n2024-01-02,-3\n",
     "line 3: non-positive value -3 in column 'dvol'"),
]


@pytest.mark.parametrize(("rule", "name", "content", "message"), CASES, ids=[c[0] for c in CASES])
def test_rule_rejects_file_and_leaves_store_untouched(
    tmp_path, good_store, good_daily, write, tree_hashes, rule, name, content, message
):
    data = tmp_path / "incoming"
    write(data / "daily" / "AAA-USD.csv", good_daily)
    write(data / "daily" / "ZZZ-USD.csv", good_daily)
    bad = write(data / name, content)
    before = tree_hashes(good_store.path)
    expected = f"{bad}, {message}" if message.startswith("line ") else f"{bad}: {message}"
    with pytest.raises(DataError, match="^" + re.escape(expected) + "$"):
        good_store.ingest(data)
    assert tree_hashes(good_store.path) == before
    assert good_store.assets() == ["GOOD-USD"]


def test_every_message_is_one_line(tmp_path, good_daily, write):
    for rule, name, content, _ in CASES:
        folder = tmp_path / rule
        write(folder / "daily" / "ZZZ-USD.csv", good_daily)
        write(folder / name, content)
        with pytest.raises(DataError) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)
            CsvSource(folder).history("ZZZ-USD")
        assert "\n" not in str(info.value), rule


def test_exact_duplicates_are_dropped_as_a_documented_repair(tmp_path, write):
    path = write(tmp_path / "DUP-USD.csv", HEAD + ROW1 + ROW2 + ROW2 + ROW3)
    with pytest.warns(DataQualityWarning, match=r"DUP-USD\.csv: dropped 1 exact duplicate row\(s\)"):
        bars = CsvSource(path).history("DUP-USD").bars["1D"]
    assert len(bars) == 3 and bars["ts"].is_unique


def test_open_close_slightly_outside_range_widen_it(tmp_path, write):
    path = write(tmp_path / "WID-USD.csv", HEAD + "2024-01-01,100,110,90,110.3,1000\n" + ROW2)
    with pytest.warns(DataQualityWarning, match=r"widened high/low of 1 bar\(s\)"):
        bars = CsvSource(path).history("WID-USD").bars["1D"]
    assert bars["high"].iloc[0] == pytest.approx(110.3)


def test_gaps_are_warned_with_count_and_largest_and_kept(tmp_path, write):
    rows = ["2024-01-01", "2024-01-02", "2024-01-05", "2024-01-06", "2024-01-16"]
    path = write(tmp_path / "GAP-USD.csv", "date,close,open,high,low\n" + "".join(f"{d},1,1,1,1\n" for d in rows))
    expected = r"GAP-USD\.csv: 2 gap\(s\) longer than 1D, largest 10 days 00:00:00 \(2024-01-06 to 2024-01-16\); gaps are kept, not filled"
    with pytest.warns(DataQualityWarning, match=expected):
        bars = CsvSource(path).history("GAP-USD").bars["1D"]
    assert len(bars) == 5  # not filled


def test_zero_volume_is_warned_not_rejected(tmp_path, write):
    path = write(tmp_path / "ZV-USD.csv", HEAD + ROW1 + "2024-01-02,105,112,101,108,0\n")
    with pytest.warns(DataQualityWarning, match=r"1 bar\(s\) with zero volume \(kept\)"):
        assert len(CsvSource(path).history("ZV-USD").bars["1D"]) == 2


def test_gap_reports_reach_the_ingest_report(tmp_path, write):
    path = write(tmp_path / "GAP-USD.csv", HEAD + ROW1 + "2024-01-09,105,112,101,108,1200\n")
    report = ParquetStore(tmp_path / "s").ingest(path)
    assert any("1 gap(s) longer than 1D, largest 8 days" in line for line in report.lines())


def test_blank_lines_and_header_case_keep_line_numbers(tmp_path, write):
    path = write(tmp_path / "BL-USD.csv", "Date, Open,HIGH,Low,Close\n2024-01-01,1,1,1,1\n\n2024-01-03,1,1,1,-1\n")
    with pytest.raises(DataError, match=r"BL-USD\.csv, line 4: non-positive price -1 in column 'close'$"):
        CsvSource(path).history("BL-USD")


def test_unknown_asset_lists_known_ones(tmp_path, good_daily, write):
    write(tmp_path / "daily" / "BTC-USD.csv", good_daily)
    write(tmp_path / "daily" / "ETH-USD.csv", good_daily)
    with pytest.raises(UnknownAsset, match=r"unknown asset 'btc-usd' in .*; did you mean 'BTC-USD'\? \(known: BTC-USD, ETH-USD; 2 in all\)"):
        CsvSource(tmp_path).history("btc-usd")


def test_frames_without_line_numbers_name_rows():
    frame = pd.DataFrame(
        {"ts": pd.to_datetime(["2024-01-02", "2024-01-01"], utc=True), "value": [1.0, 2.0]}
    )
    with pytest.raises(DataError, match=r"^src asset=X series=y, row 2: time 2024-01-01 is earlier"):
        check_series(frame, "src asset=X series=y")
    bars = pd.DataFrame({"ts": frame["ts"], "open": 1.0, "high": 1.0, "low": 2.0, "close": 1.0, "volume": 1.0})
    with pytest.raises(DataError, match=r"^b, row 1: high 1 is below low 2$"):
        check_bars(bars, "b")
