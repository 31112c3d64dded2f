"""``aetheris pool``: fit the panel priors of the pooled volatility parts (``pooled_garch``, ``pooled_har``)
and register them."""

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
    component: str = typer.Option("all", "--component", help="pooled_garch, pooled_har or all"),
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    assets: Optional[str] = typer.Option(None, "--assets", help="comma-separated assets (default: all but stablecoins and gold tokens)"),
    register: bool = typer.Option(True, "--register/--no-register", help="save the prior into the model registry"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Panel fits across assets (each asset at its own level), data up to --end only, into the registry."""
    import pandas as pd

    from aetheris_ray.api import resolve_source
    from aetheris_ray.cli.tune import EXCLUDED
    from aetheris_ray.components.range_vol import ANCHORS, fit_garch_prior, fit_pooled_prior
    from aetheris_ray.config import load_settings
    from aetheris_ray.errors import DataError, InvalidInput
    from aetheris_ray.features import compute_state
    from aetheris_ray.registry import Registry

    if fmt not in ("table", "json"):
        raise InvalidInput(f"--format {fmt!r}: use table or json")
    if component not in ("pooled_garch", "pooled_har", "all"):
        raise InvalidInput(f"--component {component!r}: use pooled_garch, pooled_har or all")
    parts = ("pooled_garch", "pooled_har") if component == "all" else (component,)
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
    histories, markets, used, skipped = [], [], [], []
    for a in names:
        try:
            st = compute_state(src.history(a), end_ts)
        except DataError as e:
            skipped.append(f"{a}: {e}")
            continue
        histories.append((st.returns, None if st.log_hl is None else (st.log_hl, st.log_co)))
        markets.append(st.market_log_hl)
        used.append(a)
    train_range = ["", end_ts.date().isoformat()]
    out: dict = {"assets": len(used), "skipped": skipped}
    priors = {}
    if "pooled_garch" in parts:
        priors["pooled_garch"] = fit_garch_prior(histories, info={"train_range": train_range, "assets": used},
                                                 markets=markets)
        g = priors["pooled_garch"].params
        out["pooled_garch"] = {k: round(float(g[k][0]), 4) for k in ("alpha", "beta", "nu")}
        ratio = priors["pooled_garch"].info.get("level_ratio")
        out["pooled_garch"]["level_ratio"] = None if ratio is None else round(float(ratio), 4)
    if "pooled_har" in parts:
        priors["pooled_har"] = fit_pooled_prior(histories, info={"train_range": train_range, "assets": used})
        out["pooled_har"] = {"n_rows": priors["pooled_har"].info["n_rows"],
                             "slopes": {str(h): [round(float(b), 4) for b in priors["pooled_har"].shared["prior"][i]]
                                        for i, h in enumerate(ANCHORS)}}
    if register:
        for name, prior in priors.items():
            rec = Registry().register(prior, component=name, train_range=train_range, extra={"assets": used})
            out[name]["version"] = rec.version
    if fmt == "json":
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    typer.echo(f"panel priors from {len(used)} assets, data up to {end_ts.date()}"
               + ("" if register else " (not registered)"))
    for name in priors:
        where = f": registered as {out[name]['version']}" if register else ""
        if name == "pooled_garch":
            g = out[name]
            ratio = "none" if g["level_ratio"] is None else f"{g['level_ratio']:.2f}"
            typer.echo(f"  pooled_garch (alpha {g['alpha']:.3f}, beta {g['beta']:.3f}, nu {g['nu']:.2f}, "
                       f"level ratio to the market {ratio}){where}")
        else:
            typer.echo("  pooled_har slopes (daily, weekly, monthly) at 1 / 7 / 14 days: "
                       + " / ".join(" ".join(f"{b:+.2f}" for b in out[name]["slopes"][h]) for h in ("1", "7", "14"))
                       + where)
    if skipped:
        typer.echo(f"skipped {len(skipped)} asset(s) without enough data up to --end: "
                   + ", ".join(s.split(":")[0] for s in skipped))
