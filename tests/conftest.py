"""Shared test fixtures: the real data folder (skipped when absent), an isolated AETHERIS_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AETHERIS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real market data folder (../shared/data); tests using it skip when it is absent."""
    if not (SHARED_DATA / "daily").is_dir():
        pytest.skip(f"real market data not found at {SHARED_DATA} (set AETHERIS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own AETHERIS_HOME so nothing touches the user's store or registry."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AETHERIS_HOME", str(home))
    monkeypatch.delenv("AETHERIS_CONFIG", raising=False)
    return home
