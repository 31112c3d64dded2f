"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DataOpt = typer.Option(None, "--data", help="CSV file or directory laid out like shared/data (daily/, intraday/, ...)")
StoreOpt = typer.Option(None, "--store", help="Parquet store directory (default: <AETHERIS_HOME>/store)")
SyntheticOpt = typer.Option(False, "--synthetic", help="use the seeded synthetic demo market (assets SYN-BTC, SYN-ETH, SYN-ALT)")


def not_yet(command: str, issue: str) -> None:
    """Placeholder commands exit non-zero and say so; they never pretend to work."""
    from aetheris_ray.errors import NotAvailable

    raise NotAvailable(f"`aetheris {command}` is not yet available ({issue})")


OptPath = Optional[Path]
