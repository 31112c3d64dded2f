"""``aetheris serve`` (placeholder until the Ray issue lands)."""

from __future__ import annotations

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import not_yet


@app.command("serve", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def serve_cmd(ctx: typer.Context) -> None:
    """Serve forecasts over HTTP with Ray Serve (not yet available)."""
    not_yet("serve", "the Ray Serve issue")
