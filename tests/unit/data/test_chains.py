"""Options chains: CSV validation (file, line, problem), snapshots, the ccxt source, the SVI chain from an index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aetheris_ray.data import chains as ch
from aetheris_ray.errors import DataError

HEADER = "as_of,expiry,strike,type,iv,open_interest,volume,underlying"
ROWS = [
    "2024-03-01 08:00:00,2024-03-29,60000,call,0.55,120,10,61000",
    "2024-03-01 08:00:00,2024-03-29,60000,put,0.57,80,,61000",
    "2024-03-02 08:00:00,2024-03-29 08:00:00,62000,C,0.52,50,3,",
]


def _write(tmp_path, rows, header=HEADER):
    path = tmp_path / "BTC-USD.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_valid_file_is_read_into_the_chain_layout(tmp_path):
    chain = ch.read_chain_csv(_write(tmp_path, ROWS))
    assert list(chain.columns) == list(ch.CHAIN_COLUMNS)
    assert chain["call"].tolist() == [False, True, True]  # sorted by (ts, expiry, strike, call)
    assert chain["expiry"].iloc[0] == pd.Timestamp("2024-03-29 08:00", tz="UTC")  # a bare date expires 08:00 UTC
    assert np.isnan(chain["volume"].iloc[0]) and np.isnan(chain["underlying"].iloc[2])


@pytest.mark.parametrize(("line", "bad", "problem"), [
    (2, "2024-03-01 08:00:00,2024-03-29,60000,call,55,120,10,61000", "not in percent"),
    (3, "2024-03-01 08:00:00,2024-03-29,60000,straddle,0.5,1,,", "is not call or put"),
    (2, "2024-03-01 08:00:00,2024-02-01,60000,call,0.5,1,,", "is not after as_of"),
    (3, "2024-03-01 08:00:00,2024-03-29,-5,put,0.5,1,,", "strike -5 must be a positive price"),
    (2, "2024-03-01 08:00:00,2024-03-29,60000,call,0.5,-1,,", "open interest -1 must be a number >= 0"),
    (3, "2024-03-01 08:00:00,2024-03-29,60000,put,abc,1,,", "non-numeric value 'abc' in column 'iv'"),
    (2, "yesterday,2024-03-29,60000,call,0.5,1,,", "unparseable timestamp 'yesterday' in column 'as_of'"),
    (3, "2024-03-01 08:00:00,2024-03-29,60000,put,,1,,", "implied vol missing"),
])
def test_validation_errors_name_file_line_and_problem(tmp_path, line, bad, problem):
    rows = [ROWS[0], ROWS[1]]
    rows[line - 2] = bad
    path = _write(tmp_path, rows)
    with pytest.raises(DataError) as exc:
        ch.read_chain_csv(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}, line {line}: "), msg
    assert problem in msg, msg


def test_missing_columns_unsorted_and_conflicting_duplicates_are_refused(tmp_path):
    with pytest.raises(DataError, match="missing column.*open_interest"):
        ch.read_chain_csv(_write(tmp_path, ["2024-03-01,2024-03-29,1,call,0.5"], "as_of,expiry,strike,type,iv"))
    with pytest.raises(DataError, match="line 3: as_of 2024-03-01 08:00:00 is earlier"):
        ch.read_chain_csv(_write(tmp_path, [ROWS[2], ROWS[0]]))
    with pytest.raises(DataError, match="line 3: the same option .* as on line 2 with different values"):
        ch.read_chain_csv(_write(tmp_path, [ROWS[0], ROWS[0].replace(",120,", ",121,")]))
    future = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    with pytest.raises(DataError, match="line 2: as_of .* is in the future"):
        ch.read_chain_csv(_write(tmp_path, [f"{future},2099-01-01,1,call,0.5,1,,"]))


def test_snapshot_takes_the_newest_known_one_and_drops_stale_or_expired(tmp_path):
    from aetheris_ray.data.synthetic import SyntheticSource

    data = SyntheticSource(seed=1, start="2024-01-01", end="2024-04-30").history("SYN-BTC")
    data = ch.attach_chain(data, ch.read_chain_csv(_write(tmp_path, ROWS)), "test")
    assert ch.chain_source_of(data) == "observed"
    first = ch.snapshot(data, pd.Timestamp("2024-03-01 22:00", tz="UTC"))
    assert len(first) == 2
    assert len(ch.snapshot(data, pd.Timestamp("2024-03-02 22:00", tz="UTC"))) == 1
    assert ch.snapshot(data, pd.Timestamp("2024-02-28 22:00", tz="UTC")) is None  # not known yet
    assert ch.snapshot(data, pd.Timestamp("2024-03-12 22:00", tz="UTC")) is None  # older than a week
    cut = data.until(pd.Timestamp("2024-03-01 22:00", tz="UTC"))
    assert len(cut.series[ch.CHAIN_SERIES]) == 2  # AssetData.until cuts a chain like any series


def test_chain_csv_source_attaches_the_chain_of_an_asset_that_has_one(tmp_path):
    from aetheris_ray.data.synthetic import SyntheticSource

    folder = tmp_path / "options"
    folder.mkdir()
    (folder / "SYN-BTC.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    src = ch.ChainCsvSource(SyntheticSource(seed=1, start="2024-01-01", end="2024-04-30"), folder)
    full = src.history("SYN-BTC")
    assert full.info[ch.CHAIN_SERIES].source.startswith("observed:")
    assert len(src.history("SYN-BTC", until="2024-03-01").series[ch.CHAIN_SERIES]) == 2
    assert ch.CHAIN_SERIES not in src.history("SYN-ETH").series


class _FakeDeribit:
    """ccxt's documented option-chain structures, no network."""

    has = {"fetchOptionChain": True}

    def load_markets(self):
        return {}

    def market(self, symbol):
        strike, kind = symbol.split("-")[2:]
        return {"expiry": 1711699200000, "strike": float(strike), "optionType": {"C": "call", "P": "put"}[kind]}

    def fetch_option_chain(self, code):
        base = {"timestamp": 1709280000000, "underlyingPrice": 61000.0, "baseVolume": 2.0}
        return {"BTC/USD:BTC-240329-60000-C": {**base, "impliedVolatility": 55.0, "openInterest": 120.0},
                "BTC/USD:BTC-240329-60000-P": {**base, "impliedVolatility": 57.0, "openInterest": 80.0},
                "BTC/USD:BTC-240329-70000-C": {**base, "impliedVolatility": None, "openInterest": 5.0}}


def test_ccxt_source_maps_option_structures_to_the_schema():
    chain = ch.fetch_chain_ccxt("BTC", client=_FakeDeribit())
    assert len(chain) == 2  # a quote without an implied vol is dropped
    assert chain["iv"].tolist() == [0.57, 0.55] and chain["call"].tolist() == [False, True]
    assert chain["expiry"].iloc[0] == pd.Timestamp("2024-03-29 08:00", tz="UTC")


@pytest.mark.parametrize("level", [20.0, 50.0, 120.0])
@pytest.mark.parametrize("rho", [-0.7, -0.25, 0.3])
def test_the_svi_chain_reprices_the_index_it_was_built_from(level, rho):
    smile = ch.svi_smiles(np.array([level]), rho)
    theta = (level / 100.0) ** 2 * smile.t
    k = ch.VS_GRID_Z[None, None, :] * np.sqrt(theta)[None, :, None]
    vs = ch.variance_swap(k, smile.total_variance(k))[0]
    np.testing.assert_allclose(np.sqrt(vs / smile.t) * 100.0, level, rtol=1e-8)  # every expiry, by construction
    chain = ch.chain_from_index(level, 40_000.0, pd.Timestamp("2024-01-01 22:00", tz="UTC"), rho)
    # independent check: the VIX / DVOL recipe on the chain's own discrete strikes, within 1 % of the level
    assert ch.vix_style_index(chain, 40_000.0) == pytest.approx(level, rel=0.01)
    atm = chain[(chain["strike"] == 40_000.0) & (chain["expiry"] == chain["expiry"].unique()[2])]["iv"].iloc[0]
    assert 0.85 * level < 100 * atm < level  # the smile's wings carry variance: ATM sits below the swap level
    assert (chain["open_interest"] > 0).all() and len(chain) == 2 * 5 * len(ch.CONSTRUCTED_Z)


def test_svi_refuses_a_non_positive_index():
    with pytest.raises(Exception, match="positive annualised percent"):
        ch.svi_smiles(np.array([0.0]))


def test_csv_source_reads_options_next_to_daily(tmp_path):
    from aetheris_ray.data.csv_connector import CsvSource

    (tmp_path / "daily").mkdir()
    (tmp_path / "options").mkdir()
    days = pd.date_range("2024-02-20", "2024-03-05", freq="D")
    (tmp_path / "daily" / "BTC-USD.csv").write_text(
        "date,open,high,low,close\n" + "".join(f"{d.date()},100,101,99,100\n" for d in days))
    (tmp_path / "options" / "BTC-USD.csv").write_text("\n".join([HEADER, *ROWS]) + "\n")
    src = CsvSource(tmp_path)
    assert src.assets() == ["BTC-USD"]
    data = src.history("BTC-USD", until="2024-03-01")
    assert data.info[ch.CHAIN_SERIES].source == "observed:options/BTC-USD.csv"
    assert len(data.series[ch.CHAIN_SERIES]) == 2
    (tmp_path / "options" / "BTC-USD.csv").write_text(HEADER + "\n" + ROWS[0].replace("0.55", "55") + "\n")
    with pytest.raises(DataError, match=r"options/BTC-USD.csv, line 2: implied vol 55 is above 5"):
        CsvSource(tmp_path).history("BTC-USD")
