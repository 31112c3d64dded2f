"""Interval coverage and QL per regime, per model and horizon, from a backtest's forecasts file.

    .venv/bin/python benchmarks/regime_coverage.py --forecasts fc.parquet [--data ../shared/data]
        [--models engine,engine_ncc] [--bootstrap 300] [--block-days 28]

``aetheris backtest ... --out fc.parquet`` writes every forecast (price quantiles and the
realised log-return ``y``); this script labels each origin with the regime the market-state
part gives at that origin (point in time, `aetheris_ray.features.compute_states`), and
prints per regime x horizon x model: the number of forecasts, the coverage of the central
50 / 80 / 90 % intervals and the QL x100 (EVALUATION.md: price quantiles, pinball loss on
price scaled by the spot), with the standard error of the 80 % coverage from a block
bootstrap that resamples whole ``--block-days`` blocks of origin dates, every asset
together (the backtest report's scheme). A coverage passes when it is within the band or
within 2 standard errors of nominal where that is wider.  Stablecoins and gold tokens are
left out as in the report.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LEVELS = np.array([0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95])
QCOLS = ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]
REGIMES = ("calm", "normal", "volatile", "crisis")


def labelled(fc: pd.DataFrame, data: Path) -> pd.DataFrame:
    """``fc`` with ``spot`` (the origin's close) and ``regime`` (the label at the origin) per row."""
    from aetheris_ray.data import CsvSource
    from aetheris_ray.features import compute_states

    src = CsvSource(data)
    parts = []
    for asset, g in fc.groupby("asset"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = src.history(asset)
        origins = pd.to_datetime(sorted(g["origin"].unique()))
        states = compute_states(hist, list(origins))
        lab = pd.DataFrame({"origin": origins, "regime": [s.regime_label for s in states],
                            "spot": [float(s.spot) for s in states]})
        g = g.assign(origin=pd.to_datetime(g["origin"]))
        parts.append(g.merge(lab, on="origin", how="left"))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--forecasts", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--models", default=None, help="comma-separated (default: every model in the file)")
    ap.add_argument("--bootstrap", type=int, default=300)
    ap.add_argument("--block-days", type=int, default=28)
    ap.add_argument("--ratio-to", default="engine", help="model the pooled QL ratios are against (paired resamples)")
    args = ap.parse_args()
    if not (args.data / "daily").is_dir():
        print(f"regime_coverage: {args.data} has no daily/ folder; nothing to label (skipped)")
        return
    from aetheris_ray.evaluation._frames import is_excluded

    fc = pd.read_parquet(args.forecasts)
    if args.models:
        fc = fc[fc["model"].isin(args.models.split(","))]
    fc = fc[~fc["asset"].map(is_excluded)]
    fc = labelled(fc, args.data)
    price = fc["spot"].to_numpy() * np.exp(fc["y"].to_numpy())
    q = fc[QCOLS].to_numpy()
    diff = price[:, None] - q
    fc["ql"] = 100.0 * 2.0 * np.maximum(LEVELS * diff, (LEVELS - 1.0) * diff).sum(axis=1) / len(LEVELS) / fc["spot"]
    for lo, hi, name in ((2, 4, "cov50"), (1, 5, "cov80"), (0, 6, "cov90")):
        fc[name] = ((price >= q[:, lo]) & (price <= q[:, hi])).astype(float)
    day = (fc["origin"] - fc["origin"].min()).dt.days.to_numpy()
    fc["block"] = day // args.block_days
    n_blocks = int(fc["block"].max()) + 1
    rng = np.random.default_rng(0)
    draws = rng.integers(0, n_blocks, size=(args.bootstrap, n_blocks))
    print(f"pooled QL ratio to {args.ratio_to} (paired block bootstrap, 90 % interval)")
    print("| model | h | QL x100 | ratio | 90 % interval |")
    print("|---|---:|---:|---:|---|")
    for h in sorted(fc["horizon"].unique()):
        ref = fc[(fc["horizon"] == h) & (fc["model"] == args.ratio_to)].groupby("block")["ql"].agg(["sum", "count"])
        ref = ref.reindex(range(n_blocks), fill_value=0)
        r_s = ref["sum"].to_numpy()[draws].sum(1) / np.maximum(ref["count"].to_numpy()[draws].sum(1), 1)
        for model in fc["model"].unique():
            g = fc[(fc["horizon"] == h) & (fc["model"] == model)]
            by = g.groupby("block")["ql"].agg(["sum", "count"]).reindex(range(n_blocks), fill_value=0)
            m_s = by["sum"].to_numpy()[draws].sum(1) / np.maximum(by["count"].to_numpy()[draws].sum(1), 1)
            ratio = g["ql"].mean() / fc[(fc["horizon"] == h) & (fc["model"] == args.ratio_to)]["ql"].mean()
            lo, hi = np.quantile(m_s / r_s, [0.05, 0.95])
            print(f"| {model} | {h} | {g['ql'].mean():.3f} | {ratio:.4f} | {lo:.4f}-{hi:.4f} |")
    print()
    print(f"{args.forecasts}: {len(fc):,} forecasts, {fc['asset'].nunique()} assets, regimes at each origin "
          f"(point in time); SE of cov80 from {args.bootstrap} block-bootstrap resamples of "
          f"{args.block_days}-day origin blocks")
    print("| regime | h | model | n | cov50 | cov80 (SE) | cov90 | QL x100 | cov80 passes |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for regime in REGIMES:
        for h in sorted(fc["horizon"].unique()):
            for model in fc["model"].unique():
                g = fc[(fc["regime"] == regime) & (fc["horizon"] == h) & (fc["model"] == model)]
                if g.empty:
                    continue
                by = g.groupby("block")["cov80"].agg(["sum", "count"]).reindex(range(n_blocks), fill_value=0)
                s, c = by["sum"].to_numpy()[draws].sum(1), by["count"].to_numpy()[draws].sum(1)
                se = float(np.std(s[c > 0] / c[c > 0]))
                cov80 = float(g["cov80"].mean())
                ok = abs(cov80 - 0.8) <= max(0.03, 2 * se)
                print(f"| {regime} | {h} | {model} | {len(g)} | {100 * g['cov50'].mean():.1f} | "
                      f"{100 * cov80:.1f} ({100 * se:.1f}) | {100 * g['cov90'].mean():.1f} | {g['ql'].mean():.3f} | "
                      f"{'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
