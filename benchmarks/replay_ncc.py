"""Replay: a deliberately mis-scaled model fed its outcomes day by day; 80 % coverage of the baseline
conformal layer and of ``ncc`` against days elapsed, per horizon bucket.

    .venv/bin/python benchmarks/replay_ncc.py [--data ../shared/data] [--assets BTC-USD,ETH-USD]
        [--year 2022] [--scale 0.7] [--plot docs/ncc_replay.png]

The raw model is EWMA(0.94)-Normal with zero drift whose volatility is multiplied by
``--scale`` (0.7: too narrow), on the real daily closes of each asset.  Its raw PITs at 1,
3, 7 and 14 days are computed once for every origin of the year; the calibrators only
see PITs, so both are then replayed on them exactly as the walk-forward's calibration
pass runs: starting from empty buffers on January 1st, each origin's map uses only the
pairs realised by that day (``origin + h <= day``), and each pair's calibrated PIT is
the one through the map in force at its origin.  Regimes are the market-state part's
labels at each origin.  ``ncc`` runs without a trained network (no artefact: the
conformal map plus the controller and the horizon guard), which is what corrects a
mis-scaled model as outcomes arrive.

Prints, per bucket and calibrator, the 80 % coverage of the origins in the 60 days
before day 30 / 90 / 180 / 365 (pooled over the assets), the coverage of days 90-365
per regime, and the wall time; writes the rolling coverage plot (matplotlib).
Skips cleanly (exit 0, a message) when the data folder is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HORIZONS = (1, 3, 7, 14)
CHECKPOINTS = (30, 90, 180, 365)
ROLL = 60


def raw_pits(data, year: int, scale: float):
    """Origin days (n,), regime codes (n,) and raw PITs {h: (n,)} of the mis-scaled EWMA-Normal model."""
    import pandas as pd
    from scipy.stats import norm

    from aetheris_ray.calibration import day_number
    from aetheris_ray.components.registry import spec_class
    from aetheris_ray.features.state import regime_codes
    from aetheris_ray.history import positive_closes

    close = positive_closes(data)
    logc = np.log(close.to_numpy(dtype=float))
    days = day_number(close.index)
    r = np.diff(logc) / np.sqrt(np.maximum(np.diff(days), 1))  # gap-scaled daily log-returns
    var = np.empty(r.size)
    v = np.var(r[:30])
    for i, x in enumerate(r):  # var[i]: EWMA variance known after return i (at close i + 1)
        v = 0.94 * v + 0.06 * x * x
        var[i] = v
    grid = np.full(int(days[-1] - days[0]) + 1 + max(HORIZONS), np.nan)
    grid[days - days[0]] = logc
    lo, hi = pd.Timestamp(f"{year}-01-01"), pd.Timestamp(f"{year + 1}-01-01")
    pos = np.flatnonzero((close.index >= lo) & (close.index < hi) & (np.arange(len(close)) >= 31))
    states = spec_class("market_state", "indices")().compute_states(data, list(close.index[pos]))
    codes = regime_codes([s.regime_label for s in states])
    o = days[pos]
    pits = {}
    for h in HORIZONS:
        y = grid[o - days[0] + h] - grid[o - days[0]]
        sd = scale * np.sqrt(h * var[pos - 1])
        pits[h] = norm.cdf(y / sd)  # NaN where the outcome is missing
    return o, codes, pits


def replay(cal, o: np.ndarray, codes: np.ndarray, pits: dict) -> dict[int, np.ndarray]:
    """The calibration pass over one asset: 1/0 inside the calibrated 80 % interval (NaN: no outcome), per horizon."""
    for h in HORIZONS:
        ok = np.isfinite(pits[h])
        cal.add(o[ok], h, codes[ok], pits[h][ok])
    inside = {h: np.full(o.size, np.nan) for h in HORIZONS}
    need = list(range(len(HORIZONS)))
    for i, day in enumerate(o.tolist()):
        lm = cal.level_map(int(codes[i]), int(day), buckets=need, version="replay")
        for h in HORIZONS:
            p = pits[h][i]
            if np.isfinite(p):
                c = float(lm.calibrated_prob(h - 1, p))
                cal.assign_calibrated(int(day), h, c)
                inside[h][i] = float(0.1 <= c <= 0.9)
    return inside


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--assets", default="BTC-USD,ETH-USD")
    ap.add_argument("--year", type=int, default=2022)
    ap.add_argument("--scale", type=float, default=0.7)
    ap.add_argument("--plot", default=str(REPO / "docs" / "ncc_replay.png"))
    args = ap.parse_args(argv)
    if not (Path(args.data) / "daily").is_dir():
        print(f"replay_ncc: no market data at {args.data} (pass --data); skipped")
        return 0
    warnings.simplefilter("ignore")
    from aetheris_ray.calibration import CalibrationConfig, Calibrator
    from aetheris_ray.components.ncc import NeuralConformalCalibration
    from aetheris_ray.data import open_source
    from aetheris_ray.features.state import REGIME_LABELS

    t0 = time.perf_counter()
    src = open_source(args.data)
    runs = {"raw": [], "conformal": [], "ncc": []}  # per asset: (day offsets, codes, {h: inside})
    t_cal = {"conformal": 0.0, "ncc": 0.0}
    for asset in args.assets.split(","):
        o, codes, pits = raw_pits(src.history(asset), args.year, args.scale)
        off = o - o[0]
        runs["raw"].append((off, codes, {h: np.where(np.isfinite(p), ((p >= 0.1) & (p <= 0.9)).astype(float), np.nan)
                                         for h, p in pits.items()}))
        for name in ("conformal", "ncc"):
            cal = (Calibrator(CalibrationConfig(), asset, "replay") if name == "conformal" else
                   NeuralConformalCalibration().build(CalibrationConfig(), asset, "replay"))
            t1 = time.perf_counter()
            runs[name].append((off, codes, replay(cal, o, codes, pits)))
            t_cal[name] += time.perf_counter() - t1

    def pooled(name: str, h: int, a: int, b: int, regime: int | None = None) -> tuple[float, int]:
        vals = [ins[h][(off >= a) & (off < b) & ((codes == regime) if regime is not None else True)]
                for off, codes, ins in runs[name]]
        v = np.concatenate(vals)
        v = v[np.isfinite(v)]
        return (float(v.mean()) if v.size else float("nan")), int(v.size)

    print(f"replay_ncc: {args.assets} {args.year}, EWMA-Normal with volatility x{args.scale}; "
          f"80 % coverage of the origins in the {ROLL} days before day d (pooled over assets)")
    print(f"{'bucket':>6} {'layer':>10} " + " ".join(f"{'d=' + str(d):>7}" for d in CHECKPOINTS)
          + f" {'d90-365':>8} {'se':>6}")
    for h in HORIZONS:
        for name in runs:
            cells = [pooled(name, h, max(0, d - ROLL), d)[0] for d in CHECKPOINTS]
            tail, n = pooled(name, h, 90, 366)
            se = np.sqrt(tail * (1 - tail) * h / max(n, 1))  # overlapping h-day outcomes: ~n/h independent
            print(f"{h:>6} {name:>10} " + " ".join(f"{c:7.3f}" for c in cells) + f" {tail:8.3f} {se:6.3f}")
    print("\ncoverage of days 90-365 per regime (n origins x assets):")
    for h in HORIZONS:
        parts = []
        for code, label in enumerate(REGIME_LABELS):
            c0, n = pooled("conformal", h, 90, 366, code)
            c1, _ = pooled("ncc", h, 90, 366, code)
            if n:
                parts.append(f"{label} n={n}: conformal {c0:.3f} ncc {c1:.3f}")
        print(f"  h={h:>2}: " + "; ".join(parts))
    print(f"\nwall {time.perf_counter() - t0:.1f}s (calibration replay: conformal {t_cal['conformal']:.1f}s, "
          f"ncc {t_cal['ncc']:.1f}s)")
    if args.plot:
        _plot(runs, Path(args.plot), args)
    return 0


def _plot(runs: dict, path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HORIZONS), figsize=(4.0 * len(HORIZONS), 3.4), sharey=True)
    style = {"raw": ("0.6", ":"), "conformal": ("tab:blue", "-"), "ncc": ("tab:red", "-")}
    days = np.arange(ROLL, 366)
    for ax, h in zip(axes, HORIZONS):
        for name, (color, ls) in style.items():
            y = []
            for d in days:
                v = np.concatenate([ins[h][(off >= d - ROLL) & (off < d)] for off, _, ins in runs[name]])
                v = v[np.isfinite(v)]
                y.append(v.mean() if v.size else np.nan)
            ax.plot(days, y, color=color, ls=ls, label=name)
        ax.axhline(0.8, color="k", lw=0.8)
        ax.axhspan(0.77, 0.83, color="0.9", zorder=0)
        ax.set_title(f"{h}-day horizon")
        ax.set_xlabel("days elapsed")
    axes[0].set_ylabel(f"80 % coverage (last {ROLL} origins)")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{args.assets} {args.year}: EWMA-Normal, volatility x{args.scale}, outcomes fed day by day")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
