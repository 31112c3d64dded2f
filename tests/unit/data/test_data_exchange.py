"""Exchange connector on recorded ccxt responses (tests/fixtures/exchange); never the network."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from aetheris_ray.data import ExchangeSource, ParquetStore
from aetheris_ray.errors import DataError, InvalidInput, UnknownAsset

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def source(client, symbols=("BTC/USDT",), **kw) -> ExchangeSource:
    return ExchangeSource("binance", symbols, client=client, since="2024-01-01", limit=5, **kw)


def test_ohlcv_pages_are_followed_and_stamped_at_the_close(fake_exchange):
    client = fake_exchange("binance_btc_usdt.json")
    data = source(client).history("BTC-USD")
    pages = [kw["since"] for method, _, kw in client.requests if method == "fetch_ohlcv"]
    assert [pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%m-%d %H:%M") for ms in pages] == [
        "01-01 00:00", "01-01 10:00", "01-01 20:00", "01-02 06:00", "01-02 16:00", "01-03 02:00", "01-03 12:00",
        "01-03 22:00",
    ]  # 5 bars a page; the last page is short and the next bar cannot have closed, so paging stops
    bars = data.bars["2h"]
    # 39 bars recorded; the one opened 2024-01-04 04:00 had not closed at the recorded clock (05:00)
    assert len(bars) == 38 and bars["ts"].is_unique
    assert bars["ts"].iloc[0] == T0 + pd.Timedelta(hours=2)  # open 00:00 + 2h
    assert bars["ts"].iloc[-1] == pd.Timestamp("2024-01-04 04:00", tz="UTC")
    assert bars["open"].iloc[0] == 42000.0


def test_daily_bars_are_whole_days_closing_at_22h(fake_exchange):
    data = source(fake_exchange("binance_btc_usdt.json")).history("BTC-USD")
    daily, bars = data.bars["1D"], data.bars["2h"]
    # Jan 1 started at 00:00 (not 22:00 the day before) and Jan 4 is still open: both dropped
    assert daily["ts"].dt.strftime("%Y-%m-%d %H:%M").tolist() == ["2024-01-02 22:00", "2024-01-03 22:00"]
    day = bars[(bars["ts"] > pd.Timestamp("2024-01-01 22:00", tz="UTC")) & (bars["ts"] <= daily["ts"].iloc[0])]
    assert len(day) == 12
    assert daily["open"].iloc[0] == day["open"].iloc[0] and daily["close"].iloc[0] == day["close"].iloc[-1]
    assert daily["high"].iloc[0] == day["high"].max() and daily["volume"].iloc[0] == pytest.approx(day["volume"].sum())


def test_funding_history_is_mapped_to_8h_and_daily_series(fake_exchange):
    client = fake_exchange("binance_btc_usdt.json")
    data = source(client).history("BTC-USD")
    assert sum(method == "fetch_funding_rate_history" for method, _, _ in client.requests) == 3  # 5 + 5 + empty
    f8 = data.series["funding_8h"]
    assert data.info["funding_8h"].unit == "fraction/8h"
    assert len(f8) == 10 and (f8["ts"].dt.microsecond == 0).all()  # .010 ms jitter floored
    daily = data.series["funding"]
    assert data.info["funding"].unit == "fraction/day"
    # day D = settlements at D 08:00, D 16:00 and D+1 00:00, known at D+1 00:00
    assert daily["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert daily["value"].tolist() == pytest.approx([0.00012 + 0.0001 + 0.00008, -0.00002 + 0.0001 + 0.00015, 0.0001 + 0.0001 + 0.00011])


def test_point_in_time_and_store_ingest(fake_exchange, tmp_path):
    src = source(fake_exchange("binance_btc_usdt.json"))
    early = src.history("BTC-USD", until="2024-01-02")
    assert early.bars["1D"]["ts"].max() == pd.Timestamp("2024-01-02 22:00", tz="UTC")
    assert early.series["funding"]["ts"].max() == pd.Timestamp("2024-01-02", tz="UTC")
    store = ParquetStore(tmp_path / "store")
    report = store.ingest(src)
    assert {p.series for p in report.partitions} == {"bars_1D", "bars_2h", "funding", "funding_8h"}
    pd.testing.assert_frame_equal(store.history("BTC-USD").bars["2h"], src.history("BTC-USD").bars["2h"])


def test_network_errors_become_data_errors_naming_exchange_and_symbol(fake_exchange):
    src = source(fake_exchange("binance_eth_usdt_network_error.json"), symbols=("ETH/USDT",))
    with pytest.raises(DataError, match=r"^binance ETH/USDT: fetch_ohlcv failed \(NetworkError: binance GET .*503 Service Unavailable\); check the network"):
        src.history("ETH-USD")


def test_unlisted_symbols_and_unknown_assets(fake_exchange):
    with pytest.raises(InvalidInput, match=r"symbol 'DOGE/USDT' is not listed on binance; e.g. BTC/USDT, ETH/USDT"):
        source(fake_exchange("binance_btc_usdt.json"), symbols=("DOGE/USDT",)).history("DOGE-USD")
    with pytest.raises(UnknownAsset, match=r"unknown asset 'SOL-USD'"):
        source(fake_exchange("binance_btc_usdt.json")).history("SOL-USD")


def test_symbol_mapping_and_argument_errors():
    assert ExchangeSource(symbols=["BTC/USDT", "ETH/BTC", "SOL/USDC"]).assets() == ["BTC-USD", "ETH-BTC", "SOL-USD"]
    with pytest.raises(InvalidInput, match=r"symbols 'BTC/USDT' and 'BTC/USDC' both map to asset 'BTC-USD'"):
        ExchangeSource(symbols=["BTC/USDT", "BTC/USDC"])
    with pytest.raises(InvalidInput, match=r"symbol 'BTCUSDT': expected a spot symbol BASE/QUOTE"):
        ExchangeSource(symbols=["BTCUSDT"])
    with pytest.raises(InvalidInput, match=r"intraday='3m': expected one of 1h, 2h"):
        ExchangeSource(intraday="3m")


def test_unknown_exchange_id_is_invalid_input_without_network():
    with pytest.raises(InvalidInput, match=r"exchange_id='nosuchexchange' is not a ccxt exchange; e.g. "):
        ExchangeSource("nosuchexchange", ["BTC/USDT"]).history("BTC-USD")


@pytest.mark.slow
def test_importing_the_data_layer_does_not_import_ccxt():
    code = "import sys, aetheris_ray.data; assert 'ccxt' not in sys.modules; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
