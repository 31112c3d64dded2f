"""Parquet store: idempotent, de-duplicating, atomic, point-in-time."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aetheris_ray.data import CsvSource, ParquetStore, SyntheticSource, cutoff_for
from aetheris_ray.errors import DataError, InvalidInput, UnknownAsset

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")

HEAD = "date,open,high,low,close,volume\n"


def rows(dates, close=100.0):
    return "".join(f"{d},{close},{close + 1},{close - 1},{close},10\n" for d in dates)


def assert_same_data(a, b):
    assert set(a.bars) == set(b.bars) and set(a.series) == set(b.series)
    for key in a.bars:
        pd.testing.assert_frame_equal(a.bars[key], b.bars[key])
    for key in a.series:
        pd.testing.assert_frame_equal(a.series[key], b.series[key])
    assert dict(a.info) == dict(b.info)


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    store = ParquetStore(tmp_path_factory.mktemp("syn") / "store")
    store.ingest(SyntheticSource(seed=11, start="2023-01-01", end="2024-06-30"))
    return store


def test_layout_partitions_and_metadata(tmp_path, mini_data):
    store = ParquetStore(tmp_path / "store")
    report = store.ingest(mini_data)
    root = store.path
    assert json.loads((root / "_store.json").read_text()) == {"format": "aetheris-ray-parquet-store", "version": 1}
    part = root / "asset=BTC-USD" / "series=funding" / "part.parquet"
    meta = json.loads(pq.read_schema(part).metadata[b"aetheris_ray"])
    assert meta == {"kind": "series", "cadence": "1D", "unit": "fraction/day",
                    "source": "derivatives/BTC_funding_daily_aggregate.csv"}
    assert (root / "asset=_market" / "series=macro_dxy" / "part.parquet").is_file()
    assert not (root / "asset=ETH-USD" / "series=macro_dxy").exists()  # market-wide series stored once
    assert store.assets() == ["BTC-USD", "ETH-USD"]
    assert "bars_2h_bitstamp" in store.series_names("BTC-USD") and "macro_spx" in store.series_names("ETH-USD")
    lines = report.lines()
    assert lines[0].startswith(f"ingested CsvSource('{mini_data}'): 2 asset(s), 14 series,")
    assert any(line.split() == ["BTC-USD", "bars_1D", "+10", "new,", "0", "already", "present"] for line in lines)


def test_history_round_trips_the_source(tmp_path, mini_data):
    store = ParquetStore(tmp_path / "store")
    store.ingest(mini_data)
    src = CsvSource(mini_data)
    for asset in src.assets():
        assert_same_data(src.history(asset), store.history(asset))


@pytest.mark.slow
def test_reingesting_the_same_files_changes_no_byte(tmp_path, mini_data, tree_hashes):
    store = ParquetStore(tmp_path / "store")
    store.ingest(mini_data)
    before = tree_hashes(store.path)
    report = store.ingest(mini_data)
    assert tree_hashes(store.path) == before
    assert report.rows_added == 0 and all(p.rows_added == 0 and p.rows_present > 0 for p in report.partitions)


def test_overlapping_files_are_deduplicated_by_ts(tmp_path, write):
    store = ParquetStore(tmp_path / "store")
    store.ingest(write(tmp_path / "a" / "OV-USD.csv", HEAD + rows(["2024-01-01", "2024-01-02", "2024-01-03"])))
    report = store.ingest(write(tmp_path / "b" / "OV-USD.csv", HEAD + rows(["2024-01-02", "2024-01-03", "2024-01-04"])))
    (part,) = report.partitions
    assert (part.rows_added, part.rows_present, part.warnings) == (1, 2, ())
    bars = store.history("OV-USD").bars["1D"]
    assert bars["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def test_conflicting_values_keep_the_stored_rows_and_warn(tmp_path, write):
    store = ParquetStore(tmp_path / "store")
    store.ingest(write(tmp_path / "a" / "CF-USD.csv", HEAD + rows(["2024-01-01", "2024-01-02"])))
    report = store.ingest(write(tmp_path / "b" / "CF-USD.csv", HEAD + rows(["2024-01-02", "2024-01-03"], close=200.0)))
    (part,) = report.partitions
    assert part.warnings == (
        "CF-USD bars_1D: 1 row(s) differ from the stored values at the same time (first at 2024-01-02 22:00:00 UTC); "
        "kept the stored values",
    )
    assert any(line.startswith("  warning: CF-USD bars_1D: 1 row(s) differ") for line in report.lines())
    assert store.history("CF-USD").bars["1D"]["close"].tolist() == [100.0, 100.0, 200.0]


def test_a_crash_mid_write_leaves_the_previous_store_intact(tmp_path, write, tree_hashes, monkeypatch):
    store = ParquetStore(tmp_path / "store")
    store.ingest(write(tmp_path / "a" / "AT-USD.csv", HEAD + rows(["2024-01-01", "2024-01-02"])))
    before, history = tree_hashes(store.path), store.history("AT-USD")

    def half_then_crash(table, where, **kwargs):
        where.write(b"PAR1 half a parquet file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_crash)
    with pytest.raises(OSError, match="No space left on device"):
        store.ingest(write(tmp_path / "b" / "AT-USD.csv", HEAD + rows(["2024-01-03"])))
    assert tree_hashes(store.path) == before  # no temp file, no half file, same bytes
    assert_same_data(store.history("AT-USD"), history)


def test_a_new_partition_crashing_mid_write_is_invisible(tmp_path, write, monkeypatch):
    store = ParquetStore(tmp_path / "store")
    store.ingest(write(tmp_path / "a" / "OLD-USD.csv", HEAD + rows(["2024-01-01"])))
    monkeypatch.setattr(pq, "write_table", lambda table, where, **kw: (where.write(b"PAR1"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        store.ingest(write(tmp_path / "b" / "NEW-USD.csv", HEAD + rows(["2024-01-01"])))
    assert store.assets() == ["OLD-USD"]
    assert not [p for p in store.path.rglob("*") if p.is_file() and p.suffix == ".tmp"]


def test_unit_mismatch_with_the_stored_partition_is_rejected_before_writing(tmp_path, mini_data, tree_hashes):
    store = ParquetStore(tmp_path / "store")
    store.ingest(mini_data)
    before = tree_hashes(store.path)
    (mini_data / "derivatives" / "BTC_perp_basis_daily.csv").write_text("date,basis_spread\n2023-06-01,12.5\n")
    with pytest.raises(DataError, match=r"asset=BTC-USD series=basis: unit 'USD' differs from the stored 'fraction of spot'"):
        store.ingest(mini_data)
    assert tree_hashes(store.path) == before


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.slow
def test_point_in_time_reads_never_return_later_rows(synthetic_store, seed):
    rng = np.random.default_rng(seed)
    full = synthetic_store.history("SYN-BTC")
    start, days = pd.Timestamp("2022-12-25"), 560
    for _ in range(15):
        as_of = start + pd.Timedelta(days=int(rng.integers(days)))
        if rng.random() < 0.5:
            as_of += pd.Timedelta(minutes=int(rng.integers(1, 24 * 60)))
        cutoff = cutoff_for(as_of)
        data = synthetic_store.history("SYN-BTC", until=as_of)
        for frame in [*data.bars.values(), *data.series.values()]:
            assert (frame["ts"] <= cutoff).all()
        assert_same_data(data, full.until(cutoff))


@pytest.mark.parametrize("make", ["csv", "store"])
def test_daily_bars_are_visible_on_their_date_side_series_one_day_later(tmp_path, mini_data, make):
    if make == "csv":
        source = CsvSource(mini_data)
    else:
        source = ParquetStore(tmp_path / "store")
        source.ingest(mini_data)
    on_d = source.history("BTC-USD", until="2024-01-02")
    assert on_d.bars["1D"]["ts"].iloc[-1] == pd.Timestamp("2024-01-02 22:00", tz="UTC")  # bar dated D: visible
    assert on_d.series["implied_vol"]["value"].tolist() == [55.5]  # dvol dated D = 2024-01-02 (57.0): not yet
    next_day = source.history("BTC-USD", until="2024-01-03")
    assert next_day.series["implied_vol"]["value"].tolist() == [55.5, 57.0]


def test_empty_and_foreign_directories(tmp_path, mini_data):
    empty = ParquetStore(tmp_path / "not-yet")
    assert empty.assets() == []
    with pytest.raises(UnknownAsset, match=r"unknown asset 'BTC-USD': store .*not-yet holds no assets; ingest data first"):
        empty.history("BTC-USD")
    with pytest.raises(InvalidInput, match=r"non-empty directory without _store\.json"):
        ParquetStore(mini_data)


def test_unknown_asset_in_a_store_lists_known_ones(synthetic_store):
    with pytest.raises(UnknownAsset, match=r"did you mean 'SYN-BTC'\? \(known: SYN-ALT, SYN-BTC, SYN-ETH; 3 in all\)"):
        synthetic_store.history("SYN-BTX")


def test_bad_until_is_invalid_input(synthetic_store):
    with pytest.raises(InvalidInput, match=r"until='last tuesday' is not a date or timestamp; use YYYY-MM-DD"):
        synthetic_store.history("SYN-BTC", until="last tuesday")


def test_a_repeated_read_is_served_from_memory_and_a_rewrite_is_read_anew(tmp_path, monkeypatch):
    """`history` keeps recent reads keyed by each file's identity: same answer, independent frames, fresh after an ingest."""
    import pyarrow.parquet

    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "AAA-USD.csv").write_text(HEAD + rows(pd.date_range("2024-01-01", periods=40).date))
    st = ParquetStore(tmp_path / "store")
    st.ingest(CsvSource(csv))
    first = st.history("AAA-USD")
    reads = []
    real = pyarrow.parquet.read_table
    monkeypatch.setattr(pyarrow.parquet, "read_table", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    second = st.history("AAA-USD")
    assert reads == []  # from memory
    assert_same_data(first, second)
    second.bars["1D"].loc[:, "close"] = -1.0  # a caller changing its frames ...
    assert (st.history("AAA-USD").bars["1D"]["close"] > 0).all()  # ... does not change the next caller's
    assert (ParquetStore(tmp_path / "store").history("AAA-USD").bars["1D"]["close"] > 0).all()  # any instance
    (csv / "AAA-USD.csv").write_text(HEAD + rows(pd.date_range("2024-01-01", periods=45).date, close=200.0))
    st.ingest(CsvSource(csv))  # rewrites the partition (a new file renamed over the old)
    after = st.history("AAA-USD")
    assert reads and len(after.bars["1D"]) == 45 and after.bars["1D"]["close"].iloc[-1] == 200.0
