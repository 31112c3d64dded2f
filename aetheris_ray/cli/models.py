"""``aetheris models``: list the model registry (``$AETHERIS_HOME/registry``)."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from aetheris_ray.cli import app


@app.command("models")
def models_cmd(
    fmt: str = typer.Option("table", "--format", help="table or json"),
    component: Optional[str] = typer.Option(None, "--component", help="only this component (e.g. rough_vol)"),
) -> None:
    """List registered model versions: component, training range, validation QL, whether it may be latest, status."""
    from aetheris_ray.errors import InvalidInput
    from aetheris_ray.registry import Registry

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    reg = Registry()
    rows = [r.to_dict() for r in reg.list_models(component)]
    if fmt == "json":
        sys.stdout.write(json.dumps({"registry": str(reg.root), "models": rows}, indent=2, default=str) + "\n")
        return
    if not rows:
        typer.echo(f"no models in {reg.root} (train one with `aetheris tune --component rough_vol --synthetic`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {reg.root}")
    for col in ("version", "component", "created", "train range", "val_ql", "latest?", "status"):
        table.add_column(col)
    for r in rows:
        ql = r["metrics"].get("val_ql")
        rng = " .. ".join(r["train_range"]) if r["train_range"] else "-"
        promo = r["promotion"]
        vs = "" if promo.get("incumbent_score") is None else f" ({promo['score']:.4f} vs {promo['incumbent_score']:.4f})"
        table.add_row(r["version"], r["component"], r["created"], rng, "-" if ql is None else f"{ql:.4f}",
                      ("yes" if r["promoted"] else "no: lost") + vs, r["status"])
    Console().print(table)
