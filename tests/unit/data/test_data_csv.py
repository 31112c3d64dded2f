"""CSV connector: file -> asset/series mapping, units, timestamps, laziness and caching."""

from __future__ import annotations

import pandas as pd
import pytest

from aetheris_ray.data import CsvSource, open_source
from aetheris_ray.data import csv_connector
from aetheris_ray.errors import DataError, DataQualityWarning, InvalidInput

UTC = "UTC"
# Data-quality notes are asserted with pytest.warns where they are the point of a test.
pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")


def test_directory_maps_files_to_assets_and_canonical_series(mini_data):
    src = CsvSource(mini_data)
    assert src.assets() == ["BTC-USD", "ETH-USD"]
    btc = src.history("BTC-USD")
    assert set(btc.bars) == {"1D", "2h", "2h_bitstamp"}
    market = {"macro_dxy", "macro_spx", "macro_gold", "market_usdt_dominance", "market_total3_mcap", "market_range"}
    assert set(btc.series) == {"funding_8h", "funding", "implied_vol", "basis", "onchain_tx_count"} | market
    units = {name: info.unit for name, info in btc.info.items()}
    assert units["funding_8h"] == "fraction/8h"
    assert units["funding"] == "fraction/day"
    assert units["implied_vol"] == "percent/year"
    assert units["basis"] == "fraction of spot"
    assert units["macro_gold"] == "USD/troy oz"
    assert btc.info["macro_dxy"].cadence == "1B"
    assert btc.info["implied_vol"].source == "derivatives/BTC_deribit_dvol_daily.csv"
    eth = src.history("ETH-USD")
    assert set(eth.bars) == {"1D"} and set(eth.series) == market
    for name in market:
        pd.testing.assert_frame_equal(eth.series[name], btc.series[name])


def test_timestamps_follow_the_known_at_convention(mini_data):
    btc = CsvSource(mini_data).history("BTC-USD")
    assert btc.bars["1D"]["ts"].iloc[0] == pd.Timestamp("2024-01-01 22:00", tz=UTC)  # daily close
    assert btc.bars["2h"]["ts"].iloc[0] == pd.Timestamp("2024-01-02 02:00", tz=UTC)  # open 00:00 + 2h
    assert btc.series["implied_vol"]["ts"].iloc[0] == pd.Timestamp("2024-01-02 00:00", tz=UTC)  # dated D -> D+1
    assert btc.series["macro_dxy"]["ts"].iloc[0] == pd.Timestamp("2024-01-03 00:00", tz=UTC)
    for frame in [*btc.bars.values(), *btc.series.values()]:
        assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"


def test_funding_8h_jitter_is_floored_and_exact_duplicates_dropped(mini_data):
    with pytest.warns(DataQualityWarning, match=r"BTC-USDT_binance_funding_8h\.csv: dropped 1 exact duplicate row"):
        funding = CsvSource(mini_data).history("BTC-USD").series["funding_8h"]
    assert funding["ts"].dt.strftime("%H:%M:%S.%f").tolist() == ["00:00:00.000000", "08:00:00.000000"] + [
        "16:00:00.000000", "00:00:00.000000"
    ]
    assert funding["value"].tolist() == [0.0001, 0.0002, -0.0001, 0.0001]  # fraction per 8h, as given


def test_funding_8h_conflicting_duplicates_after_flooring_are_rejected(mini_data):
    path = mini_data / "derivatives" / "BTC-USDT_binance_funding_8h.csv"
    path.write_text("timestamp,funding_rate\n2024-01-01 16:00:00.000,0.0001\n2024-01-01 16:00:00.010,0.0003\n")
    with pytest.raises(DataError, match=r"funding_8h\.csv, line 3: duplicate time 2024-01-01 16:00:00 \(also on line 2\)"):
        CsvSource(mini_data).history("BTC-USD")


def test_daily_funding_aggregate_is_converted_to_fraction_per_day(mini_data):
    funding = CsvSource(mini_data).history("BTC-USD").series["funding"]
    # the column is the day's mean 8h rate in percent: x3 settlements / 100
    assert funding["value"].tolist() == pytest.approx([0.0003, -0.0006])


def test_basis_is_a_fraction_of_the_same_dates_close(mini_data):
    with pytest.warns(DataQualityWarning, match=r"dropped 1 basis value\(s\) with no daily close within 3 days"):
        basis = CsvSource(mini_data).history("BTC-USD").series["basis"]
    close_jan2 = 40000.0 * 1.01 * 1.01  # day 1 close
    close_jan3 = 40000.0 * 1.02 * 1.01
    assert basis["value"].tolist() == pytest.approx([40.8 / close_jan2, -20.6 / close_jan3])
    assert basis["ts"].iloc[0] == pd.Timestamp("2024-01-03 00:00", tz=UTC)


def test_basis_stays_in_usd_without_any_close(mini_data):
    (mini_data / "derivatives" / "BTC_perp_basis_daily.csv").write_text("date,basis_spread\n2023-06-01,12.5\n")
    btc = CsvSource(mini_data).history("BTC-USD")
    assert btc.info["basis"].unit == "USD" and btc.series["basis"]["value"].tolist() == [12.5]


def test_unknown_and_orphan_files_are_skipped_with_a_warning(mini_data, write):
    write(mini_data / "derivatives" / "BTC_options_oi.csv", "date,oi\n2024-01-01,1\n")
    write(mini_data / "onchain" / "SOL_txcount_daily.csv", "date,tx_count\n2024-01-01,1\n")
    with pytest.warns(DataQualityWarning) as record:
        assets = CsvSource(mini_data).assets()
    messages = " | ".join(str(w.message) for w in record)
    assert "BTC_options_oi.csv: skipped, the name matches no known pattern of derivatives/" in messages
    assert "onchain/SOL_txcount_daily.csv: no bars for asset 'SOL-USD'; file(s) not used" in messages
    assert assets == ["BTC-USD", "ETH-USD"]


def test_only_one_venue_keeps_the_plain_cadence_key(mini_data):
    (mini_data / "intraday" / "BTC-USDT_binance_2h.csv").unlink()
    assert set(CsvSource(mini_data).history("BTC-USD").bars) == {"1D", "2h"}


def test_assets_parses_nothing_and_history_parses_only_that_asset_once(mini_data, monkeypatch):
    read = []
    original = csv_connector._read_csv
    monkeypatch.setattr(csv_connector, "_read_csv", lambda path: read.append(path.name) or original(path))
    src = CsvSource(mini_data)
    src.assets()
    assert read == []
    src.history("ETH-USD")
    assert sorted(read) == sorted(
        ["ETH-USD.csv", "DXY_daily.csv", "SPX_daily.csv", "GOLD_daily.csv", "USDT_dominance_daily.csv",
         "TOTAL3_marketcap_daily.csv", "BTC-USD.csv"]  # BTC-USD's daily bars: the market's range
    )
    src.history("ETH-USD", until="2024-01-05")
    assert len(read) == 7  # cached


def test_returned_frames_do_not_alias_the_cache(mini_data):
    src = CsvSource(mini_data)
    first = src.history("ETH-USD")
    first.bars["1D"].loc[0, "close"] = -1.0
    assert src.history("ETH-USD").bars["1D"]["close"].iloc[0] > 0


def test_single_daily_file_is_one_asset_named_by_its_stem(tmp_path, write, good_daily):
    src = CsvSource(write(tmp_path / "XAUt-USD.csv", good_daily))
    assert src.assets() == ["XAUt-USD"]
    assert len(src.history("XAUt-USD").bars["1D"]) == 5


def test_single_intraday_file_gets_daily_bars_at_the_22h_close(tmp_path, write):
    rows = "".join(
        f"{t:%Y-%m-%d %H:%M:%S},10,11,9,10.5,2\n" for t in pd.date_range("2024-01-01 22:00", periods=30, freq="2h")
    )
    src = CsvSource(write(tmp_path / "ETH-USDT_kraken_2h.csv", "timestamp,open,high,low,close,volume\n" + rows))
    data = src.history("ETH-USD")
    assert set(data.bars) == {"1D", "2h"}
    daily = data.bars["1D"]
    # bars close 2024-01-02 00:00 .. 2024-01-04 10:00: two whole days; the third is still open
    assert daily["ts"].tolist() == [pd.Timestamp("2024-01-02 22:00", tz=UTC), pd.Timestamp("2024-01-03 22:00", tz=UTC)]
    assert daily["volume"].tolist() == [24.0, 24.0]
    assert daily["open"].tolist() == [10.0, 10.0] and daily["high"].tolist() == [11.0, 11.0]


def test_intraday_cadence_is_inferred_without_a_cadence_in_the_name(tmp_path, write):
    rows = "".join(f"{t:%Y-%m-%d %H:%M:%S},1,1,1,1,1\n" for t in pd.date_range("2024-01-01", periods=60, freq="1h"))
    data = CsvSource(write(tmp_path / "SOL-USD.csv", "timestamp,open,high,low,close,volume\n" + rows)).history("SOL-USD")
    assert set(data.bars) == {"1h", "1D"}


def test_missing_path_and_ambiguous_sources_are_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match=r"data path '.*nope' does not exist; pass a CSV file or a data directory"):
        CsvSource(tmp_path / "nope")
    with pytest.raises(InvalidInput, match=r"give exactly one data source .*; data and synthetic were given"):
        open_source(data=tmp_path, synthetic=True)
    with pytest.raises(InvalidInput, match=r"give exactly one data source .*; none was given"):
        open_source()


def test_open_source_picks_the_named_source(tmp_path, mini_data):
    assert isinstance(open_source(data=mini_data), CsvSource)
    assert type(open_source(store=tmp_path / "new-store")).__name__ == "ParquetStore"
    assert open_source(synthetic=True, seed=5).seed == 5


def test_a_flat_directory_is_one_asset_per_file(tmp_path, write, good_daily):
    write(tmp_path / "flat" / "AAA-USD.csv", good_daily)
    write(tmp_path / "flat" / "BBB-USD.csv", good_daily)
    assert CsvSource(tmp_path / "flat").assets() == ["AAA-USD", "BBB-USD"]


def test_top_level_files_next_to_the_folders_are_skipped(mini_data, write, good_daily):
    write(mini_data / "BTC-USD.csv", good_daily)
    with pytest.warns(DataQualityWarning, match=r"BTC-USD\.csv: skipped, top-level CSV files are read only when"):
        assert CsvSource(mini_data).assets() == ["BTC-USD", "ETH-USD"]
