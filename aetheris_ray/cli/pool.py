"""``aetheris pool``: fit the pooled (panel) prior of the ``pooled_har`` volatility part and register it."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import DataOpt, OptPath, StoreOpt, SyntheticOpt


@app.command("pool")
def pool_cmd(
    end: str = typer.Option(..., "--end", help="last day of training data YYYY-MM-DD (before your backtest period!)"),
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    assets: Optional[str] = typer.Option(None, "--assets", help="comma-separated assets (default: all but stablecoins and gold tokens)"),
    register: bool = typer.Option(True, "--register/--no-register", help="save the prior into the model registry"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Panel fit of the range-HAR slopes across assets (asset fixed effects), data up to --end only."""
    import pandas as pd

    from aetheris_ray.api import resolve_source
    from aetheris_ray.cli.tune import EXCLUDED
    from aetheris_ray.components.range_vol import ANCHORS, fit_pooled_prior
    from aetheris_ray.config import load_settings
    from aetheris_ray.errors import DataError, InvalidInput
    from aetheris_ray.features import compute_state
    from aetheris_ray.registry import Registry

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    try:
        end_ts = pd.Timestamp(end)
    except (ValueError, TypeError):
        raise InvalidInput(f"--end {end!r}: not a date; use YYYY-MM-DD") from None
    settings = load_settings()
    src = resolve_source(settings, data=data, store=store, synthetic=synthetic)
    available = src.assets()
    names = [a.strip() for a in assets.split(",") if a.strip()] if assets else [a for a in available if a not in EXCLUDED]
    unknown = [a for a in names if a not in available]
    if unknown:
        raise InvalidInput(f"--assets: {unknown} not in the data source")
    histories, used, skipped = [], [], []
    for a in names:
        try:
            st = compute_state(src.history(a), end_ts)
        except DataError as e:
            skipped.append(f"{a}: {e}")
            continue
        histories.append((st.returns, None if st.log_hl is None else (st.log_hl, st.log_co)))
        used.append(a)
    prior = fit_pooled_prior(histories, info={"train_range": ["", end_ts.date().isoformat()], "assets": used})
    out = {"assets": len(used), "skipped": skipped, "n_rows": prior.info["n_rows"],
           "slopes": {str(h): [round(float(b), 4) for b in prior.shared["prior"][i]] for i, h in enumerate(ANCHORS)}}
    if register:
        rec = Registry().register(prior, component="pooled_har", train_range=["", end_ts.date().isoformat()],
                                  extra={"assets": used})
        out["version"] = rec.version
    if fmt == "json":
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    typer.echo(f"pooled range-HAR prior: {len(used)} assets, data up to {end_ts.date()}"
               + (f", registered as {out['version']}" if register else " (not registered)"))
    typer.echo("slopes (daily, weekly, monthly) per horizon:")
    for h, b in out["slopes"].items():
        typer.echo(f"  {h:>3} d: {b[0]:+.3f} {b[1]:+.3f} {b[2]:+.3f}")
    if skipped:
        typer.echo(f"skipped {len(skipped)} asset(s) without enough data up to --end: "
                   + ", ".join(s.split(":")[0] for s in skipped))
