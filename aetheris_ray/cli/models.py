"""``aetheris models`` (placeholder until the registry lands)."""

from __future__ import annotations

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import not_yet


@app.command("models", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def models_cmd(ctx: typer.Context) -> None:
    """List registered model versions (not yet available)."""
    not_yet("models", "the model registry issue")
