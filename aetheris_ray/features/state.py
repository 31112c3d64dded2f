"""The market state a forecast is conditioned on.

`MarketState` is what every component's ``sample`` receives; `StateBatch` holds the
same fields stacked over origins for vectorised backtests (axis 0 = origin).
Everything in a state at origin t is computed from data known at ``cutoff_for(t)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from aetheris_ray.errors import InvalidInput

#: Regime labels, calmest first; a regime's integer code is its index here.
REGIME_LABELS = ("calm", "normal", "volatile", "crisis")
_CODE = {label: i for i, label in enumerate(REGIME_LABELS)}


def regime_code(label: Any) -> int:
    """The integer code of a regime label: its index in `REGIME_LABELS`.

    The one mapping from labels to codes (calibration buckets, the walk-forward,
    component contexts).  An unknown label raises rather than passing as "normal":
    it is a bug or bad input, and a silent default would put the pairs in the
    wrong calibration bucket.  A caller with no regime at all decides what that
    means before calling.

    Raises
    ------
    InvalidInput
        ``label`` is not one of `REGIME_LABELS` (the message names it and lists them).

    >>> regime_code("volatile")
    2
    """
    try:
        return _CODE[label]
    except (KeyError, TypeError):  # TypeError: an unhashable label
        raise InvalidInput(f"regime {label!r} is not a known label; valid: {', '.join(REGIME_LABELS)}") from None


def regime_codes(labels: Any) -> np.ndarray:
    """`regime_code` of each label; an int64 array of the shape of ``labels`` (raises on the first unknown one).

    >>> regime_codes(["calm", "crisis"]).tolist()
    [0, 3]
    """
    arr = np.asarray(labels, dtype=object)
    return np.array([regime_code(x) for x in arr.ravel()], dtype=np.int64).reshape(arr.shape)


@dataclass(frozen=True)
class MarketState:
    """Features at one origin.

    Attributes
    ----------
    returns : ndarray, shape (n_obs,)
        Past daily log-returns up to and including the origin (gap-scaled; oldest first).
    mu, sigma : float
        Stationarity layer: rolling past-only mean and scale of daily log-returns
        (the stored normalisation statistics; ``(returns - mu) / sigma`` is the
        normalised series).
    regime_label : str
        One of `REGIME_LABELS`.
    regime_vector : ndarray, shape (n_regime_features,)
        Fixed-length, standardised descriptor vector (same length for every asset;
        absent inputs are 0 = "neutral").
    descriptors : dict
        Named raw descriptors (realised vols, vol of vol, drawdown, trend strength,
        funding / basis / implied-vol percentiles when present).
    mm_indices : dict
        ``gamma_squeeze``, ``inventory_unwind``, ``basis_pressure`` in [-3, 3], or None
        when the inputs are absent.
    intraday_rv : ndarray or None
        Daily realised variances from intraday bars (for HAR-RV), aligned with the
        last days of ``returns``; None when no intraday bars exist.
    log_hl, log_co : ndarray or None
        ``ln(high / low)`` and ``ln(close / open)`` of the daily bars, aligned with
        ``returns`` (NaN where a bar's range is unobserved: flat bars, gaps); None
        when the source has no high / low.
    implied_vol : ndarray or None
        The implied-volatility index (annualised percent) known at each day's close,
        aligned with ``returns`` (NaN where absent); None when the asset has none.
    market_log_hl : ndarray or None
        ``ln(high / low)`` of the market asset's daily bar (BTC-USD's in the shared data)
        of each day, aligned with ``returns`` (NaN where unobserved); None when the
        source has no market asset.
    missing : tuple of str
        Optional inputs that were absent (reported in the forecast's metadata).
    overrides : dict
        Scenario overrides applied to this state (empty for unconditional forecasts).
    context : dict
        What the features were derived from (current inputs and trailing histories),
        kept so that `aetheris_ray.scenario.apply_scenario` can recompute them from
        overridden inputs.  Internal: read the fields above instead.
    """

    asset: str
    origin: pd.Timestamp
    spot: float
    returns: np.ndarray
    mu: float
    sigma: float
    regime_label: str
    regime_vector: np.ndarray
    descriptors: dict[str, float] = field(default_factory=dict)
    mm_indices: dict[str, float | None] = field(default_factory=dict)
    intraday_rv: np.ndarray | None = None
    log_hl: np.ndarray | None = None
    log_co: np.ndarray | None = None
    implied_vol: np.ndarray | None = None
    market_log_hl: np.ndarray | None = None
    missing: tuple[str, ...] = ()
    overrides: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def conditional(self) -> bool:
        return bool(self.overrides)

    def with_(self, **changes: Any) -> "MarketState":
        return replace(self, **changes)
