"""``aetheris backtest``: the walk-forward backtest of EVALUATION.md against the baselines."""

from __future__ import annotations

from typing import List, Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import BootstrapOpt, OptPath, StoreOpt, SyntheticOpt, check_bootstrap, echo_pooled


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
    """The models of a run: the engine (``--model``, default the settings' model) first, then the baselines."""
    from aetheris_ray.api import backtest_models

    return backtest_models(model, baselines)


@app.command("backtest")
def backtest_cmd(
    data: OptPath = typer.Option(None, "--data", help="data directory laid out like shared/data "
                                 "(daily/<ASSET>.csv, ...); default: the Parquet store of `aetheris ingest`"),
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    assets: str = typer.Option("all", "--assets", help="comma-separated tickers, e.g. BTC-USD,ETH-USD, or 'all'"),
    listed_before: Optional[str] = typer.Option(None, "--listed-before", help="keep only assets whose first daily "
                                                "close is before this date, e.g. 2021-01-01"),
    start: str = typer.Option(..., "--start", help="first origin date, YYYY-MM-DD"),
    end: str = typer.Option(..., "--end", help="last target date, YYYY-MM-DD (origins go up to end - h)"),
    horizons: str = typer.Option("1,3,7,14", "--horizons", help="comma-separated days ahead, 1..90"),
    model: Optional[str] = typer.Option(None, "--model", help="engine models to score, comma-separated: "
                                        "'baseline' (default baseline components), 'rough_vol' (neural rough volatility "
                                        "from the registry), or 'none' (the baselines alone); default: the "
                                        "configured model (settings `model`, 'baseline')"),
    component: List[str] = typer.Option([], "--component", help="swap one part of every engine model: "
                                        "KIND=NAME[@VERSION], e.g. volatility=rough_vol; repeatable"),
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

    hz = parse_horizons(horizons)
    check_bootstrap(bootstrap)
    for path, flag in ((out, "--out"), (report, "--report")):
        if path is not None and not path.parent.exists():
            raise InvalidInput(f"{flag} {str(path)!r}: the folder {str(path.parent)!r} does not exist")

    from aetheris_ray.api import backtest
    from aetheris_ray.config import load_settings

    # data-quality notes as one line each (worker processes inherit this)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"note: {msg}\n"  # type: ignore[assignment]
    warnings.simplefilter("once", DataQualityWarning)
    res = backtest(assets, start, end, hz, data=data, store=store, synthetic=synthetic, model=model,
                   components=component, baselines=baselines, listed_before=listed_before, workers=workers, progress=not no_progress,
                   ray=ray, address=address, block_days=block_days, settings=load_settings(store=store))
    if out is not None:
        res.write(out)
    unc = res.uncertainty(bootstrap) if bootstrap else None
    if report is not None:
        from aetheris_ray.atomic import write_text

        write_text(report, res.report(bootstrap, uncertainty=unc))
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
