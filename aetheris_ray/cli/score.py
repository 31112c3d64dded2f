"""``aetheris score``: score a forecast file in the export format of EVALUATION.md, from the prices alone."""

from __future__ import annotations

from pathlib import Path

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import BootstrapOpt, OptPath, check_bootstrap, echo_pooled


@app.command("score")
def score_cmd(
    file: Path = typer.Argument(..., metavar="FILE", help="forecasts in the export format (CSV, or Parquet for .parquet): "
                                "[model,]asset,origin,horizon,q05..q95"),
    data: OptPath = typer.Option(None, "--data", help="data directory laid out like shared/data: the realised "
                                 "prices (the file's own y column is not used)"),
    baselines: bool = typer.Option(False, "--baselines", help="also run EWMA-Normal, GARCH(1,1)-t and Bootstrap "
                                   "walk-forward on the file's assets and period, and score them on the same origins"),
    report: OptPath = typer.Option(None, "--report", help="write the markdown report here"),
    bootstrap: int = BootstrapOpt,
    workers: int = typer.Option(2, "--workers", help="processes for the baselines (1: in-process)"),
) -> None:
    """Score any model's forecasts (EVALUATION.md): QL, coverage and width, pooled and per asset.

    Every metric is recomputed from the file and the price data; rows without a close
    at their origin or target are left out and counted.  With --baselines the three
    baselines forecast the same assets and period, and every model is scored on the
    origins all of them forecast.
    """
    import pandas as pd

    from aetheris_ray.errors import DataError, InvalidInput

    if data is None:
        raise InvalidInput("--data DIR is required: the prices to score against, laid out like shared/data")
    if not data.exists():
        raise InvalidInput(f"--data {str(data)!r} does not exist; pass a directory laid out like shared/data")
    if not file.is_file():
        raise InvalidInput(f"{str(file)!r} is not a file; pass a forecast file in the export format")
    check_bootstrap(bootstrap)
    if report is not None and not report.parent.exists():
        raise InvalidInput(f"--report {str(report)!r}: the folder {str(report.parent)!r} does not exist")

    from aetheris_ray.evaluation.backtest import SourceSpec, backtest, score_frame
    from aetheris_ray.evaluation.baselines import BASELINES, baseline_models
    from aetheris_ray.evaluation.report import export_frame, pooled_table, read_export, render_report
    from aetheris_ray.evaluation.uncertainty import block_bootstrap

    try:
        export = read_export(file)
    except (ValueError, OSError) as e:
        raise InvalidInput(f"{str(file)!r} is not a readable forecast file: {str(e).splitlines()[0]}") from None
    if export.empty:
        raise InvalidInput(f"{str(file)!r} holds no forecasts")
    if "model" not in export.columns:  # one model: named after the file
        export.insert(0, "model", file.stem)
    source = SourceSpec(data=str(data))
    frame, unscorable, levels = export_frame(export, source)
    if frame.empty:
        raise DataError(f"{file.name}: none of its {len(unscorable):,} rows has a close at its origin and target in "
                        f"{data}; nothing to score")
    names = list(dict.fromkeys(frame["model"]))
    if baselines:
        taken = sorted(set(names) & set(BASELINES))
        if taken:
            raise InvalidInput(f"{file.name} already holds {', '.join(taken)} rows: drop --baselines or rename "
                               "that model")
        origin = pd.to_datetime(frame["origin"], format="%Y-%m-%d")
        end = (origin + pd.to_timedelta(frame["horizon"], unit="D")).max()
        hz = sorted(int(h) for h in frame["horizon"].unique())
        base = backtest(source, sorted(frame["asset"].unique()), origin.min(), end, hz, baseline_models(),
                        levels=levels, progress=False, workers=workers)
        frame = pd.concat([frame, base.frame[frame.columns]], ignore_index=True)
        names += list(base.models)
    metrics = score_frame(frame, levels, models=names)
    unc = block_bootstrap(frame, levels, names, baselines=[n for n in names if n in BASELINES],
                          resamples=bootstrap) if bootstrap else None
    pooled = pooled_table(metrics, models=names)
    meta = {"file": str(file), "models": ", ".join(names), "assets": frame["asset"].nunique(),
            "rows without a close at origin or target (left out)": len(unscorable)}
    if report is not None:
        from aetheris_ray.atomic import write_text

        write_text(report, render_report(metrics, models=names, meta=meta, uncertainty=unc))
    typer.echo(f"scored {file.name}: {len(frame):,} forecasts of {', '.join(names)} on "
               f"{frame['asset'].nunique()} assets; {len(unscorable):,} row(s) without a close at origin or target "
               "left out")
    echo_pooled(pooled, unc)
    if report is not None:
        typer.echo(f"report: {report}")
