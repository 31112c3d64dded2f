"""Fixtures of the feature tests (builders live in ``featkit``)."""

from __future__ import annotations

import warnings

import pytest

from aetheris_ray.data.schema import AssetData


@pytest.fixture
def strict_warnings():
    """Every RuntimeWarning (NaN, overflow, division, empty slices...) becomes an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@pytest.fixture(scope="session")
def btc(shared_data) -> AssetData:
    """Real BTC-USD with every side series and 2h bars (skips without ../shared/data)."""
    from aetheris_ray.data.csv_connector import CsvSource

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CsvSource(shared_data).history("BTC-USD")
