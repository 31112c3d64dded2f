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

BootstrapOpt = typer.Option(1000, "--bootstrap", help="block-bootstrap resamples for the standard errors of the "
                            "pooled figures and the QL ratios' intervals (0: skip; at least 100)")


def check_data(data: Optional[Path]) -> None:
    """``--data`` must be a CSV file or a directory (``/dev/null``, a socket, a missing path: exit 2)."""
    from aetheris_ray.errors import InvalidInput

    if data is None:
        return
    if not data.exists():
        raise InvalidInput(f"--data {str(data)!r} does not exist; pass a CSV file or a directory laid out like "
                           "shared/data")
    if not (data.is_file() or data.is_dir()):
        raise InvalidInput(f"--data {str(data)!r} is neither a CSV file nor a directory; pass a CSV file or a "
                           "directory laid out like shared/data")


def check_output(path: Optional[Path], flag: str) -> None:
    """An output path's folder must exist (checked before any work is done)."""
    from aetheris_ray.errors import InvalidInput

    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise InvalidInput(f"{flag} {str(path)!r}: the folder {str(folder)!r} {why}; create it or pick another path")
    if path.is_dir():
        raise InvalidInput(f"{flag} {str(path)!r} is a folder; give a file name, e.g. {str(path / 'fan.png')!r}")


def check_bootstrap(resamples: int) -> None:
    from aetheris_ray.errors import InvalidInput

    if resamples != 0 and resamples < 100:
        raise InvalidInput(f"--bootstrap {resamples}: give at least 100 resamples (default 1000), or 0 to skip")


def echo_pooled(pooled, uncertainty) -> None:
    """The pooled table and one line per horizon against the best baseline (with bootstrap intervals)."""
    from aetheris_ray.evaluation.report import best_baseline_lines, markdown_table

    typer.echo("")
    typer.echo("pooled (stablecoins and gold tokens left out):")
    typer.echo(markdown_table(pooled))
    for line in best_baseline_lines(pooled, uncertainty):
        typer.echo(line)
