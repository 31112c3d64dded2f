"""Fixtures of the evaluation tests (helpers live in ``evalkit``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evalkit import closes, with_hole, write_daily


@pytest.fixture(scope="session")
def long_close() -> pd.Series:
    """Six years of closes, 2017-01-01 .. 2022-12-31."""
    return closes("2017-01-01", 6 * 365 + 1, seed=1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small CSV data folder.

    * AAA-USD: 2019-01-01 .. 2022-12-31, no gaps;
    * GAP-USD: 2018-01-01 .. 2022-12-31 with a two-year hole 2020-03-01 .. 2022-02-28;
    * NEW-USD: listed 2022-06-20 (too little history for any model in the test period);
    * USDT-USD: a stablecoin (forecast, left out of pooled figures).
    """
    root = tmp_path_factory.mktemp("data")
    write_daily(root, "AAA-USD", closes("2019-01-01", 4 * 365 + 1, seed=2))
    write_daily(root, "GAP-USD", with_hole(closes("2018-01-01", 5 * 365 + 1, seed=3), "2020-03-01", "2022-02-28"))
    write_daily(root, "NEW-USD", closes("2022-06-20", 100, seed=4))
    write_daily(root, "USDT-USD", closes("2019-01-01", 4 * 365 + 1, seed=5, vol=0.001, p0=1.0))
    return root
