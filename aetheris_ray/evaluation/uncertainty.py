"""How sure the pooled backtest figures are: a block bootstrap over origin dates.

A pooled figure averages tens of thousands of forecasts, but far fewer independent
ones: the 14-day targets of consecutive origins share 13 days, and crypto assets move
together on the same day.  A binomial standard error on 60,000 forecasts (0.2 points
for a 50 % coverage) is an order of magnitude too small.

The forecasts are summed per calendar day of origin (every asset together), and a
circular block bootstrap (`arch.bootstrap.CircularBlockBootstrap`) resamples runs of
``block_days`` consecutive days, so both dependences stay inside a block (the default
block is twice the longest horizon, at least 28 days).  Days without a scored origin (a
gap in the data) are empty rows.  One set of resampled days serves every model and
horizon, so a model's QL ratio to the best baseline is resampled paired, on the same
outcomes.

Rows are those the pooled table scores: origins every model forecast (the common-origin
rule of `score_frame`), stablecoins and gold tokens left out (`is_excluded`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from arch.bootstrap import CircularBlockBootstrap

from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation import scores
from aetheris_ray.evaluation.aggregate import _fmt, _interval_levels
from aetheris_ray.evaluation._frames import is_excluded
from aetheris_ray.quantiles import labels

__all__ = ["block_bootstrap", "default_block_days", "RESAMPLES", "MIN_BLOCK_DAYS"]

#: Resamples of a default run: the SEs of the SEs are about 2 %, and 1M-row runs take about a second.
RESAMPLES = 1000
#: Shortest default block, in calendar days of origins.
MIN_BLOCK_DAYS = 28


def default_block_days(horizons: Sequence[int]) -> int:
    """``max(28, 2 x longest horizon)``: blocks long against the overlap of the targets."""
    return max(MIN_BLOCK_DAYS, 2 * max((int(h) for h in horizons), default=1))


def _column_sums(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=0)


def _common_rows(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    f = frame[frame["model"].isin(names).to_numpy() & ~frame["asset"].map(is_excluded).to_numpy()]
    n_models = f.groupby(["asset", "origin", "horizon"], sort=False)["model"].transform("nunique")
    return f[(n_models == len(names)).to_numpy()]


def block_bootstrap(
    frame: pd.DataFrame,
    levels: Sequence[float],
    models: Sequence[str] | None = None,
    baselines: Sequence[str] = (),
    block_days: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """Standard errors of the pooled QL and coverages, and each model's QL ratio to the best baseline.

    Parameters
    ----------
    frame : DataFrame
        Backtest rows: ``model, asset, origin`` (YYYY-MM-DD), ``horizon``, the price
        quantiles labelled as `labels(levels)`, ``spot`` and ``y`` (realised log-return).
    levels : sequence of float
    models : sequence of str, optional
        The run's models (default: those in ``frame``).
    baselines : sequence of str
        Which of ``models`` are baselines.  Per horizon the one with the lowest pooled
        QL is "the best baseline"; every other model gets its QL ratio to it.
    block_days : int, optional
        Calendar days of origins per block (default `default_block_days`).
    resamples : int
        Bootstrap resamples (at least 100).
    seed : int
        Seed of the resampling (numpy Generator): a report is reproducible.

    Returns
    -------
    DataFrame
        One row per model x horizon: ``model, horizon, n, blocks`` (whole blocks in
        the span of its scored origins), ``block_days, ql, ql_se``, ``coverage[p]``
        and ``coverage_se[p]`` for each central interval scored, and
        ``best_baseline, ql_ratio, ratio_lo, ratio_hi`` (5 % and 95 % of the
        resampled ratios) and ``p_lower`` (share of resamples in which the model's QL
        is below the best baseline's), NaN for baselines.  Standard errors and
        intervals are NaN where the span is shorter than two blocks.  Raw units
        (log-return QL, coverage as a share).  Empty when no row is scored.
    """
    if resamples < 100:
        raise InvalidInput(f"bootstrap resamples {resamples}: use at least 100 (default {RESAMPLES})")
    lv = tuple(float(x) for x in levels)
    names = list(models) if models is not None else sorted(frame["model"].unique())
    hz = sorted(int(h) for h in frame["horizon"].unique()) if len(frame) else []
    days = default_block_days(hz) if block_days is None else int(block_days)
    if days < 1:
        raise InvalidInput(f"bootstrap block of {block_days} days: give a whole number of days >= 1")
    f = _common_rows(frame, names) if len(frame) else frame
    if f.empty:
        return pd.DataFrame()
    ivals = _interval_levels(lv)
    q = np.log(f[labels(lv)].to_numpy(dtype=float) / f["spot"].to_numpy(dtype=float)[:, None])
    y = f["y"].to_numpy(dtype=float)
    stats = {"ql": scores.pinball_quantile(y, q, lv, nan_policy="raise")}
    for p, (i, j) in ivals.items():
        stats[f"coverage[{_fmt(p)}]"] = scores.coverage_interval(y, q[:, i], q[:, j], nan_policy="raise")
    origin = pd.to_datetime(f["origin"].astype(str), format="%Y-%m-%d")
    day = (origin - origin.min()).dt.days.to_numpy()
    fields = ["n", *stats]
    per = pd.DataFrame({"model": f["model"].to_numpy(), "horizon": f["horizon"].to_numpy(dtype=int), "day": day,
                        "n": 1.0, **stats})
    sums = per.groupby(["model", "horizon", "day"], sort=True).sum()
    groups = list(dict.fromkeys(sums.index.droplevel(2)))
    # one column per (model, horizon) x field, one row per calendar day of origins (empty days: zeros)
    k = len(fields)
    daily = np.zeros((int(day.max()) + 1, len(groups) * k))
    for gi, (m, h) in enumerate(groups):
        g = sums.loc[(m, h)]
        daily[g.index.to_numpy(), gi * k:(gi + 1) * k] = g[fields].to_numpy()
    # circular blocks of `days` calendar days; the same resampled days for every column (paired ratios)
    boot = CircularBlockBootstrap(min(days, len(daily)), daily, seed=np.random.default_rng(seed)).apply(
        _column_sums, resamples)
    rows, boot_ql = [], {}
    for gi, (m, h) in enumerate(groups):
        total = daily[:, gi * k:(gi + 1) * k].sum(axis=0)
        nb = boot[:, gi * k]
        scored = np.flatnonzero(daily[:, gi * k] > 0)
        blocks = (int(scored[-1] - scored[0]) + 1) // days  # whole blocks in the span of scored origins
        if blocks < 2:
            # shorter than two blocks: every resample is about a rotation of it, its spread means nothing
            boot[:, gi * k:(gi + 1) * k] = np.nan
        row = {"model": m, "horizon": int(h), "n": int(total[0]), "blocks": blocks, "block_days": days}
        for j, c in enumerate(stats, start=1):
            with np.errstate(invalid="ignore", divide="ignore"):
                b = boot[:, gi * k + j] / nb
            row[c] = float(total[j] / total[0])
            row["ql_se" if c == "ql" else c.replace("[", "_se[")] = (
                float(np.nanstd(b, ddof=1)) if np.isfinite(b).any() else np.nan)
            if c == "ql":
                boot_ql[(m, int(h))] = b
        rows.append(row)
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(names)}
    out = out.sort_values(["horizon", "model"], key=lambda s: s.map(order) if s.name == "model" else s,
                          kind="stable").reset_index(drop=True)
    _add_ratios(out, boot_ql, set(baselines))
    return out


def _add_ratios(out: pd.DataFrame, boot_ql: dict, baselines: set[str]) -> None:
    for c in ("best_baseline", "ql_ratio", "ratio_lo", "ratio_hi", "p_lower"):
        out[c] = None if c == "best_baseline" else np.nan
    for h, g in out.groupby("horizon"):
        base = g[g["model"].isin(baselines)]
        if base.empty:
            continue
        best = base.loc[base["ql"].idxmin()]
        b = boot_ql[(best["model"], int(h))]
        for i, r in g[~g["model"].isin(baselines)].iterrows():
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = boot_ql[(r["model"], int(h))] / b
            ratio = ratio[np.isfinite(ratio)]
            out.at[i, "best_baseline"] = best["model"]
            out.at[i, "ql_ratio"] = r["ql"] / best["ql"]
            if not ratio.size:
                continue
            out.at[i, "ratio_lo"], out.at[i, "ratio_hi"] = np.quantile(ratio, [0.05, 0.95])
            out.at[i, "p_lower"] = float(np.mean(ratio < 1.0))
