"""``aetheris tune`` (placeholder until the training issue lands)."""

from __future__ import annotations

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import not_yet


@app.command("tune", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def tune_cmd(ctx: typer.Context) -> None:
    """Train and tune a neural component with Ray Tune (not yet available)."""
    not_yet("tune", "the Ray Tune issue")
