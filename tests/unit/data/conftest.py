"""Shared fixtures of the data-layer tests: CSV writers, store hashing, a replaying fake exchange."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from aetheris_ray.data import ParquetStore

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "exchange"

#: A small valid daily file (dates 2024-01-01 .. 2024-01-05).
GOOD_DAILY = """date,open,high,low,close,volume
2024-01-01,100,110,90,105,1000
2024-01-02,105,112,101,108,1200
2024-01-03,108,115,104,110,900
2024-01-04,110,111,95,97,1500
2024-01-05,97,104,96,103,1100
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def write() -> Callable[[Path, str], Path]:
    """``write(path, text)``: write a file (parents created) and return its path."""
    return _write


@pytest.fixture
def tree_hashes() -> Callable[[Path], dict[str, str]]:
    """``tree_hashes(root)``: sha256 of every file under ``root`` (temp files included), by relative path."""
    return _tree_hashes


@pytest.fixture
def good_daily() -> str:
    """A small valid daily CSV (2024-01-01 .. 2024-01-05)."""
    return GOOD_DAILY


@pytest.fixture
def good_store(tmp_path: Path) -> ParquetStore:
    """A store already holding GOOD-USD daily bars."""
    store = ParquetStore(tmp_path / "store")
    store.ingest(_write(tmp_path / "good" / "GOOD-USD.csv", GOOD_DAILY))
    return store


@pytest.fixture
def fake_exchange() -> Callable[[str], "FakeExchange"]:
    """``fake_exchange(fixture_name)``: a `FakeExchange` replaying ``tests/fixtures/exchange/<name>``."""
    return FakeExchange


class FakeExchange:
    """Replays recorded ccxt responses; a request that was not recorded fails the test.

    This replaces the network only: `ExchangeSource`'s pagination and parsing run
    unchanged against it.  Fixture format: ``{"milliseconds", "has", "markets",
    "calls": [{"method", "args", "kwargs", "response" | "error"}]}``.
    """

    def __init__(self, fixture: str) -> None:
        self._recording = json.loads((FIXTURES / fixture).read_text())
        self.has = self._recording["has"]
        self.markets = self._recording["markets"]
        self.requests: list[tuple[str, list[Any], dict[str, Any]]] = []

    def milliseconds(self) -> int:
        return int(self._recording["milliseconds"])

    def load_markets(self) -> dict[str, Any]:
        return self.markets

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None):
        return self._replay("fetch_ohlcv", [symbol], {"timeframe": timeframe, "since": since, "limit": limit})

    def fetch_funding_rate_history(self, symbol: str, since: int | None = None, limit: int | None = None):
        return self._replay("fetch_funding_rate_history", [symbol], {"since": since, "limit": limit})

    def _replay(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        import ccxt

        self.requests.append((method, args, kwargs))
        for call in self._recording["calls"]:
            if call["method"] == method and call["args"] == args and call["kwargs"] == kwargs:
                if "error" in call:
                    raise getattr(ccxt, call["error"]["type"])(call["error"]["message"])
                return copy.deepcopy(call["response"])
        raise LookupError(f"unrecorded request {method}{tuple(args)} {kwargs}")


def _daily_rows(start: str, n: int, price: float) -> str:
    rows = []
    for i, d in enumerate(pd.date_range(start, periods=n, freq="D")):
        p = price * (1 + 0.01 * i)
        rows.append(f"{d.date()},{p},{p * 1.02},{p * 0.98},{p * 1.01}")
    return "date,open,high,low,close\n" + "\n".join(rows) + "\n"


def _intraday_rows(start: str, n: int, price: float) -> str:
    rows = [
        f"{t:%Y-%m-%d %H:%M:%S},{price},{price + 5},{price - 5},{price + 1},{i + 1}"
        for i, t in enumerate(pd.date_range(start, periods=n, freq="2h"))
    ]
    return "timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n"


@pytest.fixture
def mini_data(tmp_path: Path) -> Path:
    """A directory laid out like shared/data, two assets, ten days of January 2024.

    BTC-USD closes 40000 * (1.01 + 0.01 i) on day i (2024-01-01 = day 0).
    """
    root = tmp_path / "mini"
    files = {
        "daily/BTC-USD.csv": _daily_rows("2024-01-01", 10, 40000.0),
        "daily/ETH-USD.csv": _daily_rows("2024-01-01", 10, 2000.0),
        "intraday/BTC-USDT_binance_2h.csv": _intraday_rows("2024-01-02 00:00", 24, 40500.0),
        "intraday/BTC-USD_bitstamp_2h.csv": _intraday_rows("2024-01-01 00:00", 36, 40400.0),
        "derivatives/BTC-USDT_binance_funding_8h.csv": (
            "timestamp,funding_rate\n2024-01-01 00:00:00.000,0.0001\n2024-01-01 08:00:00.001,0.0002\n"
            "2024-01-01 16:00:00.000,-0.0001\n2024-01-01 16:00:00.010,-0.0001\n2024-01-02 00:00:00.000,0.0001\n"
        ),
        "derivatives/BTC_funding_daily_aggregate.csv": "date,funding_rate_daily_pct\n2024-01-01,0.01\n2024-01-02,-0.02\n",
        "derivatives/BTC_deribit_dvol_daily.csv": "date,dvol\n2024-01-01,55.5\n2024-01-02,57.0\n2024-01-03,56.0\n",
        "derivatives/BTC_perp_basis_daily.csv": "date,basis_spread\n2024-01-02,40.8\n2024-01-03,-20.6\n2024-01-20,5\n",
        "macro/DXY_daily.csv": "date,close\n2024-01-02,102.2\n2024-01-03,102.5\n2024-01-04,102.4\n",
        "macro/SPX_daily.csv": "date,close\n2024-01-02,4742.8\n2024-01-03,4704.8\n",
        "macro/GOLD_daily.csv": "date,open,high,low,close,volume\n2024-01-02,2064,2075,2050,2073,0\n",
        "onchain/BTC_txcount_daily.csv": "date,tx_count\n2024-01-01,650000\n2024-01-02,700000\n",
        "onchain/USDT_dominance_daily.csv": "date,dominance_pct\n2024-01-01,5.1\n2024-01-02,5.0\n",
        "onchain/TOTAL3_marketcap_daily.csv": "date,market_cap_usd\n2024-01-01,6.1e11\n2024-01-02,6.3e11\n",
    }
    for rel, text in files.items():
        _write(root / rel, text)
    return root
