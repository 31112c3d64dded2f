"""Human-readable rendering of a forecast."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from aetheris_ray.quantiles import labels
from aetheris_ray.result import Forecast


def _fmt(x: float) -> str:
    return f"{x:,.2f}" if x >= 1 else f"{x:.6g}"


def _prob(p: float) -> str:
    """Three decimals; three significant digits for a far-tail probability, six decimals near 1."""
    if 0.001 <= p <= 0.999 or p in (0.0, 1.0):
        return f"{p:.3f}"
    return f"{p:.3g}" if p < 0.001 else f"{p:.6f}"


_DIRECTION = {"+": "raises it", "-": "lowers it"}
_TARGET = {"upside": "upside risk (q95 - q50)", "downside": "downside risk (q50 - q05)", "trend": "trend (q50)"}


def drivers_table(drivers: Mapping[str, Any]):
    """The drivers of ``--explain`` as a rich table (one row per target x rank) and its legend.

    ``drivers`` is `aetheris_ray.explain.explain`'s dict: ``upside`` / ``downside`` /
    ``trend`` lists of ``{"driver", "importance", "direction"}``, ``method`` and
    ``fit_r2`` (the surrogate's in-sample R^2 per target) or ``completeness_error`` (integrated
    gradients: per output, how far the attributions' sum is from the output's change).

    Returns
    -------
    (rich.table.Table, list of str)
        The table and the lines that explain its columns.
    """
    from rich.table import Table

    method = drivers.get("method")
    table = Table(title="drivers" + (f" ({method})" if method else ""))
    for name, justify in (("target", "left"), ("#", "right"), ("driver block", "left"), ("importance", "right"),
                          ("direction", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    targets = [k for k, v in drivers.items() if isinstance(v, list)]
    for target in targets:
        items = drivers[target]
        for rank, item in enumerate(items, start=1):
            imp = item.get("importance")
            table.add_row(_TARGET.get(target, target) if rank == 1 else "", str(rank), str(item.get("driver", "?")),
                          "" if imp is None else f"{100 * float(imp):.1f} %",
                          _DIRECTION.get(str(item.get("direction")), str(item.get("direction", ""))),
                          end_section=rank == len(items))
    against = ("a neutral input (integrated gradients' baseline: constant volatility, neutral regime)"
               if method == "integrated_gradients" else "typical past values")
    legend = ["importance: the block's share of the total importance for that target; direction: how the "
              f"block's current value moves the target against {against}"]
    err = drivers.get("completeness_error")
    if isinstance(err, Mapping) and err:
        ok = drivers.get("completeness_within_tolerance")
        legend.append(f"completeness (attributions sum to the output's change): largest error "
                      f"{max(float(x) for v in err.values() for x in (v if isinstance(v, list) else [v])):.2g}" + ("" if ok is None else
                                                                    f", within tolerance: {'yes' if ok else 'NO'}"))
    fit = drivers.get("fit_r2")
    if isinstance(fit, Mapping) and fit:
        legend.append("surrogate fit R^2: " + ", ".join(f"{k} {float(v):.2f}" for k, v in fit.items()))
    return table, legend


def print_forecast(fc: Forecast) -> None:
    from rich.console import Console
    from rich.table import Table

    cells = [_fmt(v) for v in fc.quantiles.ravel()] + labels(fc.levels)
    needed = 20 + (max(len(c) for c in cells) + 3) * len(fc.levels)
    console = Console(width=max(needed, Console().width))
    regime = fc.regime.get("label", "unknown")
    title = (
        f"{fc.asset}  as of {fc.origin.date()}  spot {_fmt(fc.spot)}  regime {regime}"
        + ("  [CONDITIONAL scenario]" if fc.conditional else "")
    )
    table = Table(title=title, caption=f"model {fc.model_version} | calibration {fc.calibration_version} | "
                  f"{fc.n_paths:,} paths | seed {fc.seed}")
    table.add_column("day", justify="right")
    table.add_column("date", no_wrap=True)
    for lab in labels(fc.levels):
        table.add_column(lab, justify="right", no_wrap=True)
    for i, h in enumerate(fc.horizons):
        date = (fc.origin + pd.Timedelta(days=int(h))).date()
        table.add_row(str(int(h)), str(date), *[_fmt(v) for v in fc.quantiles[i]])
    console.print(table)
    day = int(fc.horizons[-1])
    for row in fc.threshold_table():
        k = _fmt(row["price"])
        line = f"day {day}: P(price < {k}) = {_prob(row['p_below'])}   P(price > {k}) = {_prob(row['p_above'])}"
        if row.get("estimator") == "importance_sampling":
            line += f"   (importance sampling, std error {row['std_error']:.2g})"
        console.print(line)
    if fc.drivers:
        table, legend = drivers_table(fc.drivers)
        console.print(table)
        for line in legend:
            console.print(line, markup=False)
    scenario = fc.metadata.get("scenario")
    if scenario:
        mult = ", ".join(f"{k}d x{v:.3g}" for k, v in scenario["channel_vol_multiplier"].items())
        moves = "; ".join(f"{name} {_fmt(c['from'])} -> {_fmt(c['to'])} ({c['source']})"
                          for name, c in scenario["channels"].items())
        console.print(f"scenario volatility multiplier: {mult}" + (f" | {moves}" if moves else ""), markup=False)
    for w in fc.metadata.get("warnings", []):
        console.print(f"note: {w}")
