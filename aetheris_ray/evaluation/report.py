"""Backtest tables and the markdown report; re-scoring an export file from the prices alone.

Display units (EVALUATION.md): QL and interval widths on the log-return scale
x 100; coverages and hit rates in percent.  Pooled figures merge the per-asset
accumulators of every asset except stablecoins and gold tokens (`is_excluded`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray.errors import DataError, InvalidInput
from aetheris_ray.evaluation.aggregate import MetricSet
from aetheris_ray.evaluation._frames import (
    EXPORT_COLUMNS,
    MetricKey,
    daily_close,
    is_excluded,
    resolve_source,
    score_frame,
)
from aetheris_ray.quantiles import Quantile, labels

__all__ = [
    "per_asset_table",
    "pooled_metrics",
    "pooled_table",
    "hit_table",
    "best_baseline_lines",
    "uncertainty_tables",
    "render_report",
    "markdown_table",
    "score_export",
    "export_frame",
    "write_export",
    "read_export",
]

_PARQUET = (".parquet", ".pq")
#: Fewer bootstrap blocks than this and the report says its standard errors are rough.
FEW_BLOCKS = 20


def _headline(names: Sequence[str]) -> list[str]:
    """The headline metric columns present: ql, coverage[...], width[0.80] (else every width)."""
    cov = [n for n in names if n.startswith("coverage[")]
    wid = [n for n in names if n == "width[0.80]"] or [n for n in names if n.startswith("width[")]
    return ["ql", *cov, *wid]


def _scale(df: pd.DataFrame) -> pd.DataFrame:
    """Display units: x 100 for every metric (QL, widths: log-return x 100; rates: percent)."""
    out = df.copy()
    for c in out.columns:
        if c.startswith(("ql", "coverage[", "width[", "hit[", "tail_")):
            out[c] = out[c] * 100.0
    return out


def per_asset_table(metrics: Mapping[MetricKey, MetricSet], scaled: bool = False,
                    models: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per model x asset x horizon: ``n`` and every metric (raw, or display units).

    Sorted by asset, horizon and model (in the order of ``models``, default alphabetical).
    """
    rows = [{"model": m, "asset": a, "horizon": h, **ms.get()} for (m, a, h), ms in metrics.items()]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["n"] = df["n"].astype(int)
    df["excluded"] = df["asset"].map(is_excluded)
    order = list(models) if models is not None else sorted(df["model"].unique())
    df["_o"] = df["model"].map({m: i for i, m in enumerate(order)})
    df = df.sort_values(["asset", "horizon", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    return _scale(df) if scaled else df


def pooled_metrics(metrics: Mapping[MetricKey, MetricSet]) -> dict[tuple[str, int], MetricSet]:
    """Merge per-asset accumulators per (model, horizon), leaving excluded assets out."""
    out: dict[tuple[str, int], MetricSet] = {}
    for (m, a, h), ms in sorted(metrics.items()):
        if is_excluded(a):
            continue
        out[(m, h)] = out[(m, h)].merge(ms) if (m, h) in out else ms.merge(MetricSet(ms.levels))
    return out


def pooled_table(metrics: Mapping[MetricKey, MetricSet], scaled: bool = True, models: Sequence[str] | None = None,
                 full: bool = False) -> pd.DataFrame:
    """Pooled figures, one row per model x horizon.

    Columns ``model, horizon, n, ql, coverage[0.50], coverage[0.80], coverage[0.90], width[0.80]``
    (all metrics when ``full``); display units when ``scaled`` (QL and width x 100,
    coverage in percent).
    """
    pooled = pooled_metrics(metrics)
    rows = [{"model": m, "horizon": h, **ms.get()} for (m, h), ms in pooled.items()]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["model", "horizon", "n", "ql"])
    df["n"] = df["n"].astype(int)
    order = list(models) if models is not None else sorted(df["model"].unique())
    df["_o"] = df["model"].map({m: i for i, m in enumerate(order)})
    df = df.sort_values(["horizon", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    names = [c for c in df.columns if c not in ("model", "horizon", "n")]
    keep = names if full else _headline(names)
    df = df[["model", "horizon", "n", *keep]]
    return _scale(df) if scaled else df


def hit_table(metrics: Mapping[MetricKey, MetricSet], models: Sequence[str] | None = None) -> pd.DataFrame:
    """Pooled per-quantile hit rates and tail misses (percent), one row per model x horizon."""
    df = pooled_table(metrics, scaled=True, models=models, full=True)
    cols = [c for c in df.columns if c.startswith(("hit[", "tail_"))]
    return df[["model", "horizon", "n", *cols]]


def _baseline_names() -> set[str]:
    from aetheris_ray.evaluation.baselines import BASELINES

    return set(BASELINES)


def best_baseline_lines(pooled: pd.DataFrame, uncertainty: pd.DataFrame | None = None) -> list[str]:
    """One line per horizon: the best baseline's QL, and each other model's QL and ratio to it.

    ``pooled`` is `pooled_table` output (display units).  With ``uncertainty``
    (`uncertainty.block_bootstrap` output) each ratio gets its 90 % bootstrap interval
    and the share of resamples in which the model's QL is the lower.
    """
    base = _baseline_names()
    ratios = {} if uncertainty is None or uncertainty.empty else {
        (r.model, int(r.horizon)): r for r in uncertainty.itertuples() if r.best_baseline is not None}
    lines = []
    for h, g in pooled.groupby("horizon", sort=True):
        b = g[g["model"].isin(base)]
        if b.empty or b["ql"].isna().all():
            continue
        best = b.loc[b["ql"].idxmin()]
        parts = [f"h={int(h)}: best baseline {best['model']} QL {best['ql']:.3f}"]
        for _, r in g[~g["model"].isin(base)].iterrows():
            cov = f", cov80 {r['coverage[0.80]']:.1f}%" if "coverage[0.80]" in r else ""
            u = ratios.get((r["model"], int(h)))
            ci = (f" [90% {u.ratio_lo:.3f}-{u.ratio_hi:.3f}, lower in {100 * u.p_lower:.0f}% of resamples]"
                  if u is not None and np.isfinite(u.ratio_lo) else "")
            parts.append(f"{r['model']} QL {r['ql']:.3f}, ratio {r['ql'] / best['ql']:.3f}{ci}"
                         f" ({'beats' if r['ql'] < best['ql'] else 'does not beat'} it{cov})")
        lines.append("; ".join(parts))
    return lines


def uncertainty_tables(uncertainty: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Display forms of `uncertainty.block_bootstrap` output.

    Returns the standard errors (model, horizon, blocks, QL and coverages each with
    its SE, x100) and the ratios to the best baseline (non-baseline models only).
    """
    u = uncertainty
    se_cols = [c for c in u.columns if c == "ql" or c.startswith(("coverage[", "coverage_se[")) or c == "ql_se"]
    ses = u[["model", "horizon", "blocks", *se_cols]].copy()
    for c in se_cols:
        ses[c] = ses[c] * 100.0
    ratios = u[u["best_baseline"].notna()][["model", "horizon", "best_baseline", "ql_ratio", "ratio_lo",
                                            "ratio_hi", "p_lower"]].copy()
    ratios["p_lower"] = [f"{100 * v:.0f}" if np.isfinite(v) else "" for v in ratios["p_lower"].astype(float)]
    return ses.reset_index(drop=True), ratios.reset_index(drop=True)


_HEADERS = {"ql": "QL x100", "n": "n", "horizon": "h", "ql_se": "se", "best_baseline": "best baseline",
            "ql_ratio": "QL ratio", "ratio_lo": "5%", "ratio_hi": "95%", "p_lower": "lower in % of resamples"}


def _header(c: str) -> str:
    if c in _HEADERS:
        return _HEADERS[c]
    for pre, fmt in (("coverage[", "cov{} %"), ("coverage_se[", "se"), ("width[", "width{} x100"), ("hit[", "hit{} %"),
                     ("tail_low[", "below q{} %"), ("tail_high[", "above q{} %")):
        if c.startswith(pre):
            lv = float(c[len(pre):-1])
            return fmt.format(f"{round(lv * 100):02d}")
    return c


def markdown_table(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub markdown table (numbers right-aligned, ``digits`` decimals; metric headers in display form)."""
    if df.empty:
        return "(no rows)"
    cols = list(df.columns)
    head = "| " + " | ".join(_header(c) for c in cols) + " |"
    sep = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "---"
                         for c in cols) + "|"

    def cell(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else ""
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def render_report(
    metrics: Mapping[MetricKey, MetricSet],
    counts: pd.DataFrame | None = None,
    unscored: Mapping[str, str] | None = None,
    models: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    uncertainty: pd.DataFrame | None = None,
) -> str:
    """The markdown report: pooled table, best-baseline comparison, sampling uncertainty (when
    ``uncertainty``, `uncertainty.block_bootstrap` output, is given), hit rates, counts, per-asset figures."""
    pooled = pooled_table(metrics, models=models)
    out = ["# Walk-forward backtest", ""]
    if meta:
        out += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    out += [
        "Protocol: EVALUATION.md. QL = (2/n_levels) x sum of pinball losses of the log-return quantiles, "
        "x100; coverage of the central 50/80/90% intervals in percent; width of the 80% interval x100. "
        "Every model is scored on the same origins (those all models forecast). Pooled figures leave out "
        "stablecoins and gold tokens (USDT, USDC, DAI, TUSD, USDD, PAXG, XAUt).",
        "",
        "## Pooled",
        "",
        markdown_table(pooled),
        "",
    ]
    lines = best_baseline_lines(pooled, uncertainty)
    if lines:
        out += ["## Against the best baseline", ""] + [f"- {x}" for x in lines] + [""]
    if uncertainty is not None and not uncertainty.empty:
        ses, ratios = uncertainty_tables(uncertainty)
        days = int(uncertainty["block_days"].iloc[0])
        few = int(uncertainty["blocks"].min())
        if few < 2:
            warn = [f"The period is shorter than two blocks of {days} days: too short for standard errors.", ""]
        elif few < FEW_BLOCKS:
            warn = [f"Only {few} blocks: with fewer than {FEW_BLOCKS} these standard errors are rough (a longer "
                    "period gives better ones).", ""]
        else:
            warn = []
        out += ["## Sampling uncertainty (block bootstrap)", "", *warn,
                f"Pooled figures rest on far fewer independent outcomes than forecasts: targets of nearby origins "
                f"overlap and assets move together.  Standard errors (se) from resampling whole blocks of {days} "
                f"calendar days of origins, every asset together (the rows of the pooled table; one set of "
                f"resamples for all models, so ratios are paired).  A coverage within about 2 se of nominal is "
                f"consistent with a calibrated model.", "", markdown_table(ses), ""]
        if not ratios.empty:
            out += ["QL ratio to the best baseline (below 1: the model is better), its 5-95 % bootstrap interval "
                    "and the share of resamples in which the model has the lower QL:", "",
                    markdown_table(ratios, digits=3), ""]
    out += ["## Per-quantile hit rates and tail misses (pooled, percent)", "",
            "hitNN: share of outcomes below the qNN forecast (nominal NN%); below/above: outside the "
            "outermost quantiles.", "", markdown_table(hit_table(metrics, models=models), digits=1), ""]
    if counts is not None and not counts.empty:
        tot = counts.groupby(["model", "horizon"], sort=False)[
            ["calendar_days", "no_close", "scorable", "model_skipped", "scored"]].sum().reset_index()
        out += ["## Origins", "",
                "calendar_days: days in [start, end - h] over all assets; no_close: of those, without a close "
                "at the origin or the target; model_skipped: scorable origins the model could not forecast "
                "(too little history); scored: origins every model forecast.", "", markdown_table(tot), ""]
    if unscored:
        out += ["## Assets with no scored origin", ""] + [f"- {a}: {why}" for a, why in unscored.items()] + [""]
    per = per_asset_table(metrics, scaled=True, models=models)
    if not per.empty:
        names = [c for c in per.columns if c not in ("model", "asset", "horizon", "n", "excluded")]
        per = per[["asset", "horizon", "model", "n", *_headline(names), "excluded"]]
        out += ["## Per asset", "", "excluded: left out of the pooled figures.", "", markdown_table(per), ""]
    return "\n".join(out)


# -- export files ------------------------------------------------------------------


def write_export(df: pd.DataFrame, path: str | Path) -> Path:
    """Write an export frame: Parquet when the suffix is ``.parquet``/``.pq``, else CSV (full precision)."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InvalidInput(f"--out {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    from aetheris_ray.atomic import open_atomic

    with open_atomic(path, binary=path.suffix.lower() in _PARQUET) as fh:  # a failed write keeps the old file
        if path.suffix.lower() in _PARQUET:
            df.to_parquet(fh, index=False)
        else:
            df.to_csv(fh, index=False)
    return path


def read_export(path: str | Path) -> pd.DataFrame:
    """Read an export file written by `write_export` (floats read back exactly: pandas >= 3 parses round-trip)."""
    path = Path(path)
    if path.suffix.lower() in _PARQUET:
        return pd.read_parquet(path)
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, dtype={"origin": str, "model": str, "asset": str}, **exact)


def _export_levels(df: pd.DataFrame) -> tuple[float, ...]:
    qcols = [c for c in df.columns if c not in (*EXPORT_COLUMNS, "y", "spot")]
    try:
        lv = tuple(Quantile.parse(c).value for c in qcols)
    except InvalidInput as e:
        raise InvalidInput(f"export columns: {e}; expected {', '.join(EXPORT_COLUMNS)}, q05 .. q95, y") from None
    if not lv or list(lv) != sorted(lv) or labels(lv) != qcols:
        raise InvalidInput(f"export columns {qcols}: quantile columns must be increasing qNN labels")
    return lv


def export_frame(export: pd.DataFrame, source: Any) -> tuple[pd.DataFrame, pd.DataFrame, tuple[float, ...]]:
    """An export frame made ready to score: ``spot`` and ``y`` read from the price data.

    ``y`` and the origin close come from ``source`` (the export's own ``y`` is not
    used); a missing ``model`` column becomes ``model``.

    Returns
    -------
    (frame, unscorable, levels)
        The rows with a close at the origin and the target (with ``spot`` and ``y``),
        the rows without one, and the export's quantile levels.
    """
    df = export.copy()
    if "model" not in df.columns:
        df.insert(0, "model", "model")
    missing = [c for c in EXPORT_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidInput(f"export: missing column(s) {', '.join(missing)}")
    lv = _export_levels(df.drop(columns=["y", "spot"], errors="ignore"))
    try:
        origin = pd.to_datetime(df["origin"].astype(str), format="%Y-%m-%d")
        horizon = df["horizon"].astype(int)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"export: origin must be YYYY-MM-DD and horizon a whole number of days ({e})") from None
    src = resolve_source(source)
    target = origin + pd.to_timedelta(horizon, unit="D")
    spot = np.full(len(df), np.nan)
    tgt = np.full(len(df), np.nan)
    for asset, idx in df.groupby("asset", sort=False).indices.items():
        close = daily_close(src.history(str(asset)))
        spot[idx] = close.reindex(origin.iloc[idx]).to_numpy()
        tgt[idx] = close.reindex(target.iloc[idx]).to_numpy()
    df["origin"] = origin.dt.strftime("%Y-%m-%d")
    df["horizon"] = horizon
    df["spot"] = spot
    df["y"] = np.log(tgt / spot)
    bad = ~(np.isfinite(spot) & np.isfinite(tgt))
    return df[~bad].reset_index(drop=True), df[bad].reset_index(drop=True), lv


def score_export(export: pd.DataFrame, source: Any, models: Sequence[str] | None = None
                 ) -> dict[MetricKey, MetricSet]:
    """Recompute every metric from an export frame and the price data alone.

    ``y`` and the origin close are read from ``source`` (the export's own ``y`` is not
    used), the log-quantiles are ``log(price / close_origin)``, and the same
    common-origin rule as the run applies (an asset x origin x horizon counts when
    every model has a row).  The result equals the run's `BacktestResult.metrics`.

    Parameters
    ----------
    export : DataFrame
        ``model, asset, origin, horizon, q05 .. q95[, y]`` (a ``model`` column is
        optional when the file holds one model).
    source : MarketSource, SourceSpec or a data directory
    models : sequence of str, optional
        The run's models (default: those in the file).

    Raises
    ------
    DataError
        A row has no close at its origin or target in the price data.
    """
    df, bad, lv = export_frame(export, source)
    if len(bad):
        r = bad.iloc[0]
        raise DataError(f"export row {r['model']} {r['asset']} {r['origin']} h={r['horizon']}: no close at the "
                        f"origin or the target in the price data ({len(bad)} such row(s))")
    return score_frame(df, lv, models=models)
