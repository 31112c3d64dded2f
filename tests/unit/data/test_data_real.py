"""The real files in ../shared/data (skipped when absent): all load, BTC-USD is complete, the store round-trips."""

from __future__ import annotations


import pandas as pd
import pytest

from aetheris_ray.data import CsvSource, ParquetStore

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")


@pytest.fixture(scope="module")
def real(shared_data) -> CsvSource:
    return CsvSource(shared_data)


@pytest.mark.slow
def test_every_daily_file_loads(real, shared_data):
    stems = sorted(p.stem for p in (shared_data / "daily").glob("*.csv"))
    assert real.assets() == stems
    for asset in stems:
        bars = real.history(asset).bars["1D"]
        assert len(bars) > 100, asset
        assert bars["ts"].is_monotonic_increasing and bars["ts"].is_unique, asset
        assert (bars["ts"].dt.hour == 22).all(), asset


def test_btc_usd_has_every_optional_input(real):
    btc = real.history("BTC-USD")
    assert {"1D", "2h", "2h_bitstamp"} <= set(btc.bars)
    assert {"funding", "funding_8h", "implied_vol", "basis", "onchain_tx_count", "macro_spx"} <= set(btc.series)
    assert btc.bars["1D"]["close"].iloc[0] < 0.1  # 2010 prices of a few cents load
    assert (btc.series["funding_8h"]["ts"].dt.microsecond == 0).all()  # .001/.010 settlement jitter floored
    assert btc.series["basis"]["value"].abs().max() < 0.01  # a fraction of spot, not USD
    assert 20 < btc.series["implied_vol"]["value"].median() < 150
    assert btc.series["funding"]["value"].abs().median() < 0.003



def test_stablecoins_load_with_their_near_zero_volatility(real):
    usdt = real.history("USDT-USD").bars["1D"]
    recent = usdt[usdt["ts"] > pd.Timestamp("2023-01-01", tz="UTC")]
    assert recent["close"].between(0.95, 1.05).all()


@pytest.mark.slow
def test_whole_directory_ingests_and_round_trips(real, tmp_path):
    store = ParquetStore(tmp_path / "store")
    report = store.ingest(real)
    assert store.assets() == real.assets()
    assert report.rows_added > 250_000
    for asset in real.assets():
        a, b = real.history(asset), store.history(asset)
        assert set(a.bars) == set(b.bars) and set(a.series) == set(b.series), asset
        for key in a.bars:
            pd.testing.assert_frame_equal(a.bars[key], b.bars[key])
        for key in a.series:
            pd.testing.assert_frame_equal(a.series[key], b.series[key])
        assert dict(a.info) == dict(b.info), asset
