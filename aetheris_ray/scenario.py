"""What-if scenarios: whitelisted, range-checked overrides of a `MarketState`'s inputs.

`apply_scenario` returns a new state whose features are recomputed from the
overridden inputs by the same kernel that built them (`features.build.derive`),
so the descriptors, market-maker indices, regime vector and label stay
consistent with each other.  The state records its ``overrides``: a forecast
made from it is conditional (``Forecast.conditional``) and must never feed
calibration buffers.

===================  ================  =================================================================
key                  range             effect
===================  ================  =================================================================
``iv_level``         5 .. 300          implied vol (annualised %): ``implied_vol``, ``iv_pct``,
                                       ``iv_rv_spread``, ``iv_change_5d``, ``gamma_squeeze``
``skew``             -1 .. 1           25-delta risk-reversal proxy: descriptor and vector element
``funding_rate``     -0.01 .. 0.01     funding (fraction/day): ``funding``, ``funding_pct``,
                                       ``funding_mean_14d``, ``inventory_unwind``
``basis``            -0.2 .. 0.2       basis (fraction of spot): ``basis``, ``basis_pct``,
                                       ``basis_change_5d``, ``basis_pressure``
``gamma_squeeze``    -3 .. 3           sets the index itself (after the recomputation above)
``inventory_unwind`` -3 .. 3           sets the index itself
``rv_shock``         0.2 .. 5          multiplies realised vol: ``rv_short``, ``rv_long``, ``sigma``;
                                       recomputes ``vol_pct``, ``vol_of_vol``, ``iv_rv_spread``,
                                       ``gamma_squeeze``, label and vector
===================  ================  =================================================================

An input the asset has no history of (``iv_level`` for an asset without implied
vol data) is standardised with the documented cross-asset `mm_indices.PRIORS`
instead of its own history; it stays listed in ``missing`` as ``<input>_history``.
Raw ``returns`` and ``intraday_rv`` are observed data and are not changed:
components that read them directly apply `vol_multiplier`.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Mapping

import numpy as np

from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.build import HISTORY_WIDTHS, KERNEL_DESCRIPTORS, SIDE_INPUTS, derive
from aetheris_ray.features.state import REGIME_LABELS, MarketState

#: key -> (low, high, meaning); both bounds included.
SCENARIO_RANGES: dict[str, tuple[float, float, str]] = {
    "iv_level": (5.0, 300.0, "implied volatility, annualised percent"),
    "skew": (-1.0, 1.0, "25-delta risk-reversal proxy"),
    "funding_rate": (-0.01, 0.01, "perpetual funding rate, fraction per day"),
    "basis": (-0.2, 0.2, "perpetual minus spot, fraction of spot"),
    "gamma_squeeze": (-3.0, 3.0, "market-maker index, z-score"),
    "inventory_unwind": (-3.0, 3.0, "market-maker index, z-score"),
    "rv_shock": (0.2, 5.0, "multiplier on realised volatility"),
}
#: Overrides of raw inputs: scenario key -> `derive` base key.
_INPUT_KEYS = {"iv_level": "iv", "skew": "skew", "funding_rate": "funding", "basis": "basis"}
#: Market-maker components standardised with the prior when the overridden input lacks history.
_PRIOR_COMPONENTS = {"iv_level": ("g1", "g2"), "funding_rate": ("u1", "u2"), "basis": ("b1", "b2")}
_INDEX_KEYS = ("gamma_squeeze", "inventory_unwind")
_KERNEL_MISSING = frozenset(SIDE_INPUTS) | {f"{name}_history" for name in SIDE_INPUTS}


def _whitelist() -> str:
    return ", ".join(f"{k} [{lo:g}, {hi:g}]" for k, (lo, hi, _) in SCENARIO_RANGES.items())


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, float]:
    """Check scenario overrides against the whitelist and its sanity ranges.

    Parameters
    ----------
    overrides : mapping str -> number

    Returns
    -------
    dict str -> float

    Raises
    ------
    InvalidInput
        Not a mapping; an unknown key (the message lists the whitelist); a value
        that is not a real number, not finite, or outside its range (the message
        names key, value and range).

    Examples
    --------
    >>> validate_overrides({"iv_level": 80})
    {'iv_level': 80.0}
    >>> validate_overrides({"vix": 30})
    Traceback (most recent call last):
    ...
    aetheris_ray.errors.InvalidInput: scenario key 'vix' is not supported; allowed keys: iv_level [5, 300], ...
    """
    if not isinstance(overrides, Mapping):
        raise InvalidInput(
            f"scenario: expected a mapping of key -> number, got {type(overrides).__name__}; "
            f"allowed keys: {_whitelist()}"
        )
    out: dict[str, float] = {}
    for key, value in overrides.items():
        if key not in SCENARIO_RANGES:
            raise InvalidInput(f"scenario key {key!r} is not supported; allowed keys: {_whitelist()}")
        lo, hi, meaning = SCENARIO_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, Real):
            raise InvalidInput(
                f"scenario {key}={value!r} is not a number; give a number in [{lo:g}, {hi:g}] ({meaning})"
            )
        x = float(value)
        if not math.isfinite(x):
            raise InvalidInput(f"scenario {key}={value!r} is not finite; give a number in [{lo:g}, {hi:g}] ({meaning})")
        if not lo <= x <= hi:
            raise InvalidInput(f"scenario {key}={value!r} is outside the range [{lo:g}, {hi:g}] ({meaning})")
        out[key] = x
    return out


def apply_scenario(state: MarketState, overrides: Mapping[str, Any]) -> MarketState:
    """A new state with ``overrides`` applied and every dependent feature recomputed.

    Overrides accumulate: applying ``a`` then ``b`` equals applying ``{**a, **b}``
    (features are always recomputed from the unconditional inputs).

    Parameters
    ----------
    state : MarketState
        Built by `compute_state` / `compute_states` (it carries the inputs).
    overrides : mapping str -> number
        See the module table; checked by `validate_overrides`.

    Returns
    -------
    MarketState
        ``overrides`` holds every override applied so far; ``conditional`` is True
        unless no override was ever given.

    Raises
    ------
    InvalidInput
        Bad overrides, or a state without the feature context.
    """
    new = validate_overrides(overrides)
    ctx = state.context
    if "base" not in ctx or "history" not in ctx:
        raise InvalidInput(
            "state: no feature context to recompute from; build it with aetheris_ray.features.compute_state"
        )
    merged = {**state.overrides, **new}
    base = {k: np.array([v], dtype=float) for k, v in ctx["base"].items()}
    prior_for: set[str] = set()
    for key, value in merged.items():
        if key in _INPUT_KEYS:
            base[_INPUT_KEYS[key]] = np.array([value])
            prior_for.update(_PRIOR_COMPONENTS.get(key, ()))
    shock = merged.get("rv_shock", 1.0)
    base["rv_short"] = base["rv_short"] * shock
    base["rv_long"] = base["rv_long"] * shock
    history = {k: _padded(ctx["history"][k], w) for k, w in HISTORY_WIDTHS.items()}
    fixed = {k: merged[k] for k in _INDEX_KEYS if k in merged}
    out = derive(base, history, frozenset(prior_for), fixed)
    descriptors = {k: v for k, v in state.descriptors.items() if k not in KERNEL_DESCRIPTORS}
    descriptors = {**{k: float(v[0]) for k, v in out.descriptors.items() if not np.isnan(v[0])}, **descriptors}
    missing = [name for name, flag in out.missing.items() if flag[0]]
    missing += [name for name in state.missing if name not in _KERNEL_MISSING]
    return state.with_(
        sigma=ctx["base"]["sigma"] * shock,
        regime_label=REGIME_LABELS[int(out.label[0])],
        regime_vector=out.vector[0],
        descriptors=descriptors,
        mm_indices={k: (None if np.isnan(v[0]) else float(v[0])) for k, v in out.mm.items()},
        missing=tuple(missing),
        overrides=merged,
    )


def vol_multiplier(state: MarketState) -> float:
    """The scenario's multiplier on realised volatility (1.0 when none): for components
    that read raw ``returns`` or ``intraday_rv``."""
    return float(state.overrides.get("rv_shock", 1.0))


def _padded(view: np.ndarray, width: int) -> np.ndarray:
    """A stored history view as one (1, width) row, NaN in front, as `past_windows` builds it."""
    row = np.full(width, np.nan)
    if len(view):
        row[width - len(view) :] = view
    return row[None, :]


__all__ = ["SCENARIO_RANGES", "apply_scenario", "validate_overrides", "vol_multiplier"]
