"""The one `Forecast` result object (gluonts' Forecast contract, arch's result object)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray.errors import InvalidInput
from aetheris_ray.quantiles import Quantile, labels


@dataclass(frozen=True, eq=False)
class Forecast:
    """A calibrated forecast cone for one asset from one origin.

    Attributes
    ----------
    asset : str
    origin : pandas.Timestamp
        The as-of date (tz-naive, normalised); the forecast used data known at its close.
    spot : float
        Last close at the origin, in the quote currency.
    horizons : ndarray, shape (n_steps,), int
        Days ahead, one per step (``1..horizon``).
    levels : tuple of float
        Quantile levels in (0, 1), increasing.
    quantiles : ndarray, shape (n_steps, n_levels)
        Calibrated price quantiles.  These are the authoritative numbers.
    thresholds : ndarray, shape (n_thresholds,)
        Requested price levels K.
    p_below : ndarray, shape (n_thresholds,)
        Calibrated P(price at the last step < K).
    cdf_levels, cdf_prices : ndarray, shape (n_grid,)
        A dense calibrated quantile function at the last step, for `prob_below` at any K.
    paths : ndarray, shape (n_paths, n_steps), optional
        RAW simulated daily log-returns, before calibration (the sample quantiles
        of these are not the answer once the conformal step has moved them).
    p_above : ndarray, shape (n_thresholds,), optional
        Calibrated P(price at the last step > K); ``1 - p_below`` up to rounding,
        kept apart so a tiny upper-tail probability keeps its digits.  Default
        (None): ``1 - p_below``.
    threshold_se : ndarray, shape (n_thresholds,), optional
        Standard error of each threshold probability (the same for below and above).
    threshold_estimator : tuple of str
        ``"monte_carlo"`` (share of paths) or ``"importance_sampling"`` per
        threshold (`aetheris_ray.tails`); empty when not recorded.
    """

    asset: str
    origin: pd.Timestamp
    spot: float
    horizons: np.ndarray
    levels: tuple[float, ...]
    quantiles: np.ndarray
    thresholds: np.ndarray
    p_below: np.ndarray
    cdf_levels: np.ndarray
    cdf_prices: np.ndarray
    regime: dict[str, Any]
    mm_indices: dict[str, Any]
    drivers: dict[str, Any] | None
    conditional: bool
    seed: int
    model_version: str
    calibration_version: str
    coverage: dict[str, Any]
    n_paths: int
    paths: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    p_above: np.ndarray | None = None
    threshold_se: np.ndarray | None = None
    threshold_estimator: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=float)
        if q.shape != (len(self.horizons), len(self.levels)):
            raise InvalidInput(
                f"quantiles shape {q.shape} does not match (n_steps={len(self.horizons)}, n_levels={len(self.levels)})"
            )
        if not np.all(np.isfinite(q)) or not np.isfinite(self.spot):
            raise InvalidInput(f"forecast for {self.asset} holds non-finite prices")
        if np.any(q <= 0) or self.spot <= 0:
            raise InvalidInput(f"forecast for {self.asset} holds non-positive prices")
        if q.shape[1] > 1 and np.any(np.diff(q, axis=1) < 0):
            raise InvalidInput(f"forecast for {self.asset}: quantiles do not increase with the level at every step")
        pb = np.asarray(self.p_below, dtype=float)
        if pb.shape != np.shape(self.thresholds) or np.any(~np.isfinite(pb)) or np.any((pb < 0) | (pb > 1)):
            raise InvalidInput(f"forecast for {self.asset}: threshold probabilities must be finite and in [0, 1]")
        for name in ("p_above", "threshold_se"):
            v = getattr(self, name)
            if v is not None:
                a = np.asarray(v, dtype=float)
                if a.shape != pb.shape or np.any(~np.isfinite(a)) or np.any((a < 0) | (a > 1)):
                    raise InvalidInput(f"forecast for {self.asset}: {name} must be finite, in [0, 1], "
                                       "one per threshold")
        if self.threshold_estimator and len(self.threshold_estimator) != pb.size:
            raise InvalidInput(f"forecast for {self.asset}: threshold_estimator needs one entry per threshold")

    # -- queries ---------------------------------------------------------------------------
    def quantile(self, q: float | str) -> np.ndarray:
        """Price path of one level, shape (n_steps,).  The level must be one of `levels`."""
        level = Quantile.parse(q).value
        for i, v in enumerate(self.levels):
            if abs(v - level) < 1e-9:
                return self.quantiles[:, i].copy()
        raise InvalidInput(f"quantile {q!r} was not computed; available: {', '.join(labels(self.levels))}")

    def prob_below(self, price: float) -> float:
        """Calibrated P(price at the last step < ``price``)."""
        if not price > 0:
            raise InvalidInput(f"price {price!r} must be positive")
        for k, p in zip(self.thresholds, self.p_below):
            if k == price:
                return float(p)
        lv, px = np.asarray(self.cdf_levels), np.asarray(self.cdf_prices)
        if price <= px[0]:
            return float(lv[0] * price / px[0]) if price < px[0] else float(lv[0])
        if price >= px[-1]:
            return float(lv[-1])
        return float(np.interp(np.log(price), np.log(px), lv))

    def prob_above(self, price: float) -> float:
        """Calibrated P(price at the last step > ``price``) = 1 - `prob_below`."""
        if self.p_above is not None:
            for k, p in zip(self.thresholds, self.p_above):
                if k == price:
                    return float(p)
        return 1.0 - self.prob_below(price)

    def threshold_table(self) -> list[dict[str, Any]]:
        """Per threshold: ``price, p_below, p_above, estimator, std_error`` (the wire's `ThresholdProb` fields)."""
        pa = self.p_above if self.p_above is not None else 1.0 - np.asarray(self.p_below, dtype=float)
        rows = []
        for i, (k, p) in enumerate(zip(self.thresholds, self.p_below)):
            row: dict[str, Any] = {"price": float(k), "p_below": float(p), "p_above": float(pa[i])}
            if self.threshold_estimator:
                row["estimator"] = self.threshold_estimator[i]
            if self.threshold_se is not None:
                row["std_error"] = float(self.threshold_se[i])
            rows.append(row)
        return rows

    # -- conversions -----------------------------------------------------------------------
    def to_response(self):  # -> ForecastResponse
        from aetheris_ray.contract import ForecastResponse, ThresholdProb

        return ForecastResponse(
            asset=self.asset,
            as_of=self.origin.date(),
            spot=float(self.spot),
            horizons=[int(h) for h in self.horizons],
            quantiles={lab: [float(x) for x in self.quantiles[:, i]] for i, lab in enumerate(labels(self.levels))},
            thresholds=[ThresholdProb(**row) for row in self.threshold_table()],
            regime=self.regime,
            mm_indices=self.mm_indices,
            drivers=self.drivers,
            conditional=self.conditional,
            seed=int(self.seed),
            model_version=self.model_version,
            calibration_version=self.calibration_version,
            coverage=self.coverage,
            paths=int(self.n_paths),
            metadata=self.metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_response().model_dump(mode="json")

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_frame(self) -> pd.DataFrame:
        """EVALUATION.md's long export frame: ``asset, origin, horizon, ts, q05, ...``, one row per step."""
        df = pd.DataFrame(self.quantiles, columns=labels(self.levels))
        df.insert(0, "ts", [self.origin + pd.Timedelta(days=int(h)) for h in self.horizons])
        df.insert(0, "horizon", np.asarray(self.horizons, dtype=int))
        df.insert(0, "origin", self.origin.strftime("%Y-%m-%d"))
        df.insert(0, "asset", self.asset)
        return df

    def to_csv(self) -> str:
        """The CSV export format: ``asset,origin,horizon,q05,...,q95``, one row per step."""
        return self.to_frame().drop(columns=["ts"]).to_csv(index=False, float_format="%.10g")

    def plot(self, path: str | None = None, history: pd.Series | None = None):
        """Fan chart; writes a PNG when ``path`` is given and returns the matplotlib Figure."""
        from aetheris_ray.plotting import fan_chart

        return fan_chart(self, path=path, history=history)
