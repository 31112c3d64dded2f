"""``aetheris forecast``."""

from __future__ import annotations

import sys
from enum import Enum
from typing import List, Optional

import typer

from aetheris_ray.cli import app
from aetheris_ray.cli._common import DataOpt, OptPath, StoreOpt, SyntheticOpt, check_data, check_output


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def parse_scenario(items: list[str]) -> dict[str, float] | None:
    from aetheris_ray.errors import InvalidInput

    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise InvalidInput(f"--scenario {item!r}: expected KEY=NUMBER, e.g. --scenario iv_level=80") from None
    return out or None


@app.command("forecast")
def forecast_cmd(
    asset: str = typer.Option(..., "--asset", help="ticker, e.g. BTC-USD (a daily file's name without .csv)"),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="days ahead, 1..90 (default 7)"),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="origin date YYYY-MM-DD (default: newest close)"),
    paths: Optional[int] = typer.Option(None, "--paths", help="Monte Carlo paths, 100..1,000,000 (default 10,000)"),
    quantiles: Optional[str] = typer.Option(None, "--quantiles", help="comma-separated levels, e.g. 0.05,0.5,0.95 or q05,q50,q95"),
    threshold: List[float] = typer.Option([], "--threshold", help="price level K for P(price < K) / P(price > K); repeatable"),
    scenario: List[str] = typer.Option([], "--scenario", help="what-if override KEY=VALUE, e.g. iv_level=80; repeatable"),
    explain: bool = typer.Option(False, "--explain", help="compute the top drivers of upside / downside risk"),
    model: Optional[str] = typer.Option(None, "--model", help="preset ('baseline', 'rough_vol'), 'latest' or "
                                        "PRESET@VERSION"),
    component: List[str] = typer.Option([], "--component", help="swap one part: KIND=NAME[@VERSION], e.g. "
                                        "volatility=rough_vol; repeatable"),
    data: OptPath = DataOpt,
    store: OptPath = StoreOpt,
    synthetic: bool = SyntheticOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed (default: drawn, and printed with the result)"),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json or csv (json/csv follow the forecast contract)"),
    plot: OptPath = typer.Option(None, "--plot", help="also write a fan-chart PNG to this path"),
    force: bool = typer.Option(False, "--force", help="run even above the HTTP memory budget of paths x horizon "
                               "(32,000,000 path-steps, about 0.8 GB; 1,000,000 x 90 days is over 2 GB)"),
) -> None:
    """Forecast an asset's price cone and threshold probabilities from an as-of date.

    Data-quality notes about the input files (gaps, zero-volume bars) are not repeated
    here; `aetheris ingest` reports them.
    """
    import warnings

    from aetheris_ray.api import forecast
    from aetheris_ray.config import load_settings
    from aetheris_ray.errors import DataQualityWarning

    warnings.filterwarnings("ignore", category=DataQualityWarning)
    check_data(data)
    check_output(plot, "--plot")

    settings = load_settings(store=store)
    fc = forecast(
        asset,
        horizon,
        as_of=as_of,
        paths=paths,
        seed=seed,
        quantiles=quantiles,
        thresholds=threshold,
        scenario=parse_scenario(scenario),
        explain=explain,
        model=model,
        components=component,
        data=data,
        store=store,
        synthetic=synthetic,
        settings=settings,
        force=force,
    )
    if plot is not None:
        fc.plot(str(plot))
    if fmt is Format.json:
        sys.stdout.write(fc.to_json(indent=2) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(fc.to_csv())
    else:
        from aetheris_ray.cli._table import print_forecast

        print_forecast(fc)
