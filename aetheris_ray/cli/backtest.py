"""``aetheris backtest``: the walk-forward backtest of EVALUATION.md against the baselines."""

from __future__ import annotations

from typing import Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import BootstrapOpt, OptPath, check_bootstrap, echo_pooled

def parse_horizons(text: str) -> list[int]:
    """``"1,3,7,14"`` -> ``[1, 3, 7, 14]``; anything else raises `InvalidInput` naming the flag."""
    from aetheris_ray.errors import InvalidInput

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or not 1 <= int(part) <= 90:
            raise InvalidInput(f"--horizons {text!r}: {part!r} is not a whole number of days from 1 to 90; "
                               "use e.g. --horizons 1,3,7,14")
        out.append(int(part))
    return out


def build_models(model: str | None, baselines: bool) -> list:
    """The models of a run: the engine (``--model``) first, then the baselines (``--baselines``)."""
    from aetheris_ray.errors import InvalidInput

    models = []
    if model is not None:
        from aetheris_ray.engine import MODELS, model_config
        from aetheris_ray.errors import ModelNotFound
        from aetheris_ray.walkforward import EngineModel

        for name in dict.fromkeys(n.strip() for n in model.split(",") if n.strip()):
            try:
                cfg, _ = model_config(name)
            except ModelNotFound:
                raise InvalidInput(f"--model {name!r} is not known; valid: {', '.join(MODELS)} "
                                   "(NAME@VERSION pins a registered version)") from None
            models.append(EngineModel(cfg, name="engine" if name == "baseline" else f"engine_{name}"))
    if baselines:
        from aetheris_ray.evaluation.baselines import baseline_models

        models += baseline_models()
    if not models:
        raise InvalidInput("nothing to backtest: pass --model baseline and/or --baselines")
    return models


@app.command("backtest")
def backtest_cmd(
    data: OptPath = typer.Option(None, "--data",
                                 help="data directory laid out like shared/data (daily/<ASSET>.csv, ...)"),
    assets: str = typer.Option("all", "--assets", help="comma-separated tickers, e.g. BTC-USD,ETH-USD, or 'all'"),
    listed_before: Optional[str] = typer.Option(None, "--listed-before", help="keep only assets whose first daily "
                                                "close is before this date, e.g. 2021-01-01"),
    start: str = typer.Option(..., "--start", help="first origin date, YYYY-MM-DD"),
    end: str = typer.Option(..., "--end", help="last target date, YYYY-MM-DD (origins go up to end - h)"),
    horizons: str = typer.Option("1,3,7,14", "--horizons", help="comma-separated days ahead, 1..90"),
    model: Optional[str] = typer.Option(None, "--model", help="engine models to score, comma-separated: "
                                        "'baseline' (default baseline components), 'rough_vol' (neural rough volatility "
                                        "from the registry)"),
    baselines: bool = typer.Option(False, "--baselines", help="also score EWMA-Normal, GARCH(1,1)-t and "
                                   "Bootstrap in the same run"),
    out: OptPath = typer.Option(None, "--out", help="write every forecast here: CSV, or Parquet for .parquet"),
    report: OptPath = typer.Option(None, "--report", help="write the markdown report here"),
    workers: int = typer.Option(2, "--workers", help="processes across assets (1: in-process)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (it is off anyway when "
                                     "stderr is not a terminal)"),
    ray: bool = typer.Option(False, "--ray", help="run assets x blocks of origins as Ray tasks (a new local Ray, "
                             "or --address); same numbers as in-process"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to run on with --ray, e.g. auto "
                                          "or ray://head:10001 (implies --ray)"),
    block_days: Optional[int] = typer.Option(None, "--block-days", help="with --ray: origin days per task "
                                             "(default 180; 0: one task per asset)"),
    bootstrap: int = BootstrapOpt,
) -> None:
    """Walk-forward backtest (EVALUATION.md): QL, coverage and width per horizon, per asset and pooled.

    Every model forecasts every origin in [start, end - h] that has a close at both
    ends, using only data up to the origin; the pooled table (stablecoins and gold
    tokens left out) is printed at the end.
    """
    import warnings

    from aetheris_ray.errors import DataQualityWarning, InvalidInput

    if data is None:
        raise InvalidInput("--data DIR is required: a directory laid out like shared/data")
    if not data.exists():
        raise InvalidInput(f"--data {str(data)!r} does not exist; pass a directory laid out like shared/data")
    hz = parse_horizons(horizons)
    if block_days is not None and not (ray or address):
        raise InvalidInput("--block-days splits the work of a Ray run: add --ray (or --address)")
    check_bootstrap(bootstrap)
    if block_days is not None and block_days < 0:
        raise InvalidInput(f"--block-days {block_days}: give a number of days, e.g. 180, or 0 for one task per asset")
    models = build_models(model, baselines)
    for path, flag in ((out, "--out"), (report, "--report")):
        if path is not None and not path.parent.exists():
            raise InvalidInput(f"{flag} {str(path)!r}: the folder {str(path.parent)!r} does not exist")

    from aetheris_ray.evaluation.backtest import SourceSpec, backtest

    if listed_before is not None:
        import pandas as pd

        from aetheris_ray.data import open_source
        from aetheris_ray.evaluation.backtest import listed_before as _listed_before, resolve_assets

        try:
            pd.Timestamp(listed_before)
        except ValueError:
            raise InvalidInput(f"--listed-before {listed_before!r} is not a date; use YYYY-MM-DD") from None
        src = open_source(data=data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataQualityWarning)
            kept = _listed_before(src, resolve_assets(src, assets), listed_before)
        if not kept:
            raise InvalidInput(f"--listed-before {listed_before}: no asset has a close before that date")
        assets = ",".join(kept)
    # data-quality notes as one line each (worker processes inherit this)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"note: {msg}\n"  # type: ignore[assignment]
    warnings.simplefilter("once", DataQualityWarning)
    if ray or address:
        from aetheris_ray.distributed.backtest import DEFAULT_BLOCK_DAYS, backtest_ray

        days = DEFAULT_BLOCK_DAYS if block_days is None else (block_days or None)
        res = backtest_ray(SourceSpec(data=str(data)), assets, start, end, hz, models, address=address,
                           block_days=days)
    else:
        res = backtest(SourceSpec(data=str(data)), assets, start, end, hz, models, progress=not no_progress,
                       workers=workers)
    if out is not None:
        res.write(out)
    unc = res.uncertainty(bootstrap) if bootstrap else None
    if report is not None:
        report.write_text(res.report(bootstrap, uncertainty=unc), encoding="utf-8")
    pooled = res.pooled()
    n_scored = len(res.assets) - len(res.unscored)
    typer.echo(f"backtest {res.start.date()} to {res.end.date()}: {n_scored}/{len(res.assets)} assets scored, "
               f"models {', '.join(res.models)}, {len(res.frame):,} forecasts, wall {res.wall_s:.1f} s")
    for a, why in res.unscored.items():
        typer.echo(f"not scored: {a}: {why}")
    echo_pooled(pooled, unc)
    if out is not None:
        typer.echo(f"forecasts: {out}")
    if report is not None:
        typer.echo(f"report: {report}")
