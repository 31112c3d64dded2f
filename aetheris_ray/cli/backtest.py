"""``aetheris backtest`` (placeholder until the engine issue lands)."""

from __future__ import annotations

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import not_yet


@app.command("backtest", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def backtest_cmd(ctx: typer.Context) -> None:
    """Walk-forward backtest against the baselines (not yet available)."""
    not_yet("backtest", "the engine and backtest issue")
