"""``python -m aetheris_ray`` runs the CLI."""

from aetheris_ray.cli import run

run()
