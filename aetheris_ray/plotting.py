"""Fan charts (matplotlib, Agg backend; imported only when a plot is asked for)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from aetheris_ray.result import Forecast


def fan_chart(fc: "Forecast", path: str | None = None, history: pd.Series | None = None, lookback: int = 60):
    """Draw the forecast cone: nested central intervals shaded, the median line, the spot.

    Parameters
    ----------
    history : Series of daily closes, optional
        Drawn to the left of the origin (the last ``lookback`` days).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = [fc.origin + pd.Timedelta(days=int(h)) for h in fc.horizons]
    x = [fc.origin, *dates]
    levels = np.asarray(fc.levels)
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    if history is not None and len(history):
        h = history[history.index <= fc.origin].iloc[-lookback:]
        ax.plot(h.index, h.to_numpy(), color="black", lw=1.2, label="history")
    pairs = [(i, len(levels) - 1 - i) for i in range(len(levels) // 2) if levels[i] < 0.5 < levels[len(levels) - 1 - i]]
    for rank, (lo, hi) in enumerate(pairs):
        width = levels[hi] - levels[lo]
        ax.fill_between(
            x,
            [fc.spot, *fc.quantiles[:, lo]],
            [fc.spot, *fc.quantiles[:, hi]],
            color="tab:blue",
            alpha=0.15 + 0.15 * rank,
            lw=0,
            label=f"{width:.0%} interval",
        )
    mid = np.flatnonzero(np.isclose(levels, 0.5))
    if mid.size:
        ax.plot(x, [fc.spot, *fc.quantiles[:, mid[0]]], color="tab:blue", lw=1.8, label="median")
    for k in fc.thresholds:
        ax.axhline(float(k), color="tab:red", lw=0.8, ls="--")
    title = f"{fc.asset} from {fc.origin.date()} ({fc.regime.get('label', 'unknown')} regime)"
    if fc.conditional:
        title += " - CONDITIONAL scenario"
    ax.set_title(title)
    ax.set_ylabel("price")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    if path is not None:
        from pathlib import Path

        from aetheris_ray.atomic import open_atomic

        fmt = Path(path).suffix.lstrip(".").lower() or "png"
        with open_atomic(path) as fh:
            fig.savefig(fh, format=fmt)
        plt.close(fig)
    return fig
