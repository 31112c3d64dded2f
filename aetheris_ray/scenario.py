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

How the cone moves (`scenario_effect`): ``rv_shock`` acts through the volatility
model, which filters the shocked returns.  The other keys act through a channel
whose sensitivity of forward realised volatility is estimated from the asset's
own past, point in time (`aetheris_ray.sensitivity`): each simulated step's
deviation from the drift is multiplied by ``exp(beta_k . (x_scenario - x_actual))``
for its lead block ``k`` (1, 2-3, 4-7, 8-14, 15-30, 31-90 days).

===================  =============  ==========================================================
key                  channel        ``x``
===================  =============  ==========================================================
``iv_level``         implied_vol    log implied vol; without implied vol at the origin the
                                    actual value is ``rv_short`` annualised (where the
                                    ``gamma_squeeze`` prior reads 0)
``gamma_squeeze``    implied_vol    log of the implied vol at which the index reads the
                                    override, the scenario's other inputs held (wins over
                                    ``iv_level``, as in the state)
``funding_rate``     inventory      the recomputed ``inventory_unwind`` index, by side
``inventory_unwind`` inventory      the index, by side (absent at the origin: 0)
``rv_shock``         (model)        --
``skew``, ``basis``  none           no sensitivity can be estimated: the forecast says so
===================  =============  ==========================================================

With the ``greeks`` market state and a chain (observed or constructed from the
implied-vol index, `aetheris_ray.features.greeks`), the scenario also moves the
chain: ``skew`` sets its smile correlation (at-the-money variance held) and moves
the implied-vol channel by the ratio of the skewed chain's 30-day variance swap to
the unskewed one's; ``basis`` (and ``funding_rate``) move its ``basis_pressure``
index, which acts through the model's conditioning only.

The combined multiplier of a lead block is capped to the ``rv_shock`` range
[0.2, 5]; a channel value outside the asset's history is reported as
extrapolated.  Every such note goes to the forecast's warnings, and
``metadata["scenario"]`` carries the multipliers, the channel moves and the
sensitivities (posterior, data estimate and standard error, rows, prior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.build import HISTORY_WIDTHS, KERNEL_DESCRIPTORS, SIDE_INPUTS, derive
from aetheris_ray.features.mm_indices import INDEX_CLIP, INDEX_COMPONENTS, component_zscores, components, indices
from aetheris_ray.features.state import REGIME_LABELS, MarketState
from aetheris_ray.sensitivity import LEAD_BLOCKS, block_label

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
    new_state = state.with_(
        sigma=ctx["base"]["sigma"] * shock,
        regime_label=REGIME_LABELS[int(out.label[0])],
        regime_vector=out.vector[0],
        descriptors=descriptors,
        mm_indices={k: (None if np.isnan(v[0]) else float(v[0])) for k, v in out.mm.items()},
        missing=tuple(missing),
        overrides=merged,
    )
    if "chain" in ctx:  # a greeks state: the scenario moves its options chain too (features.greeks)
        from aetheris_ray.features.greeks import chain_scenario

        new_state = chain_scenario(new_state, merged)
    return new_state


def vol_multiplier(state: MarketState) -> float:
    """The scenario's multiplier on realised volatility (1.0 when none): for components
    that read raw ``returns`` or ``intraday_rv``."""
    return float(state.overrides.get("rv_shock", 1.0))


# -- the scenario's effect on the cone ------------------------------------------------------------

#: Scenario key -> the channel it moves the cone through (`aetheris_ray.sensitivity.CHANNELS`);
#: ``"model"``: the volatility model itself (it filters the shocked returns); None: no estimated effect.
KEY_CHANNEL: dict[str, str | None] = {
    "iv_level": "implied_vol",
    "gamma_squeeze": "implied_vol",
    "funding_rate": "inventory",
    "inventory_unwind": "inventory",
    "rv_shock": "model",
    "skew": None,
    "basis": None,
}
#: Why a key has no estimated effect (said in the forecast's warnings).
NO_EFFECT = {
    "skew": "no data carries a risk-reversal series, so no sensitivity can be estimated",
    "basis": "basis history (BTC only, from 2024-07) is too short to estimate a sensitivity and none exists "
             "before 2022 to set a prior",
}
#: Bounds of the channels' combined volatility multiplier per lead block (the ``rv_shock`` sanity range).
MULTIPLIER_RANGE = SCENARIO_RANGES["rv_shock"][:2]
_IV_BOUNDS = SCENARIO_RANGES["iv_level"][:2]
_ANNUAL = 100.0 * math.sqrt(365.0)  # daily log-return std -> annualised percent


@dataclass(frozen=True)
class ScenarioEffect:
    """How a scenario moves the cone on top of the recomputed state.

    Attributes
    ----------
    log_mult : ndarray, shape (n_lead_blocks,)
        Log multiplier of the simulated return deviations (``r - drift``) in each
        lead block of `aetheris_ray.sensitivity.LEAD_BLOCKS`: ``sum_c beta_c . (x_c,scenario - x_c,actual)``,
        capped to `MULTIPLIER_RANGE`.
    channels : dict
        Per moved channel: values at the origin and in the scenario, the keys that
        moved it, the source of its sensitivities and the sensitivities.
    keys : dict
        Per override: the channel it acts through (or ``model`` / ``none``) and the source.
    warnings : tuple of str
    """

    log_mult: FloatArray
    channels: dict[str, dict[str, Any]]
    keys: dict[str, dict[str, str]]
    warnings: tuple[str, ...]

    def step_scale(self, horizon: int) -> FloatArray | None:
        """Multiplier of each step's return deviation, shape (horizon,); None when every one is 1."""
        if not np.any(self.log_mult):
            return None
        block = np.searchsorted([b for _, b in LEAD_BLOCKS], np.arange(1, horizon + 1), side="left")
        return np.exp(self.log_mult[np.minimum(block, len(LEAD_BLOCKS) - 1)])

    def report(self, horizon: int) -> dict[str, Any]:
        """JSON-ready summary for the forecast's metadata (lead blocks up to ``horizon``)."""
        shown = [i for i, (a, _) in enumerate(LEAD_BLOCKS) if a <= horizon]
        return {
            "method": "baseline paths with each step's deviation from the drift multiplied by "
                      "exp(beta . (x_scenario - x_actual)); beta per lead block, estimated point in time",
            "channel_vol_multiplier": {block_label(LEAD_BLOCKS[i]): float(np.exp(self.log_mult[i])) for i in shown},
            "overrides": self.keys,
            "channels": self.channels,
        }


def scenario_effect(actual: MarketState, scenario: MarketState, sens: Any) -> ScenarioEffect:
    """The channel multipliers of ``scenario`` (from `apply_scenario`) relative to ``actual``.

    Parameters
    ----------
    actual : MarketState
        The unconditional state at the origin.
    scenario : MarketState
        ``apply_scenario(actual, overrides)``.
    sens : aetheris_ray.sensitivity.Sensitivities
        The asset's sensitivities at the origin.

    Returns
    -------
    ScenarioEffect
        The implied-vol channel moves by ``log(IV_scenario / IV_actual)``; without
        implied vol at the origin the actual value is the realised vol
        (``rv_short``, annualised), the neutral point of the ``gamma_squeeze``
        prior.  A ``gamma_squeeze`` override is turned into the implied vol that
        gives that index with the other inputs of the scenario (it wins over
        ``iv_level``, as it does in the state).  The inventory channel moves with
        the ``inventory_unwind`` index, by side (an absent index counts as 0).
    """
    over = scenario.overrides
    notes: list[str] = []
    keys: dict[str, dict[str, str]] = {}
    chain = scenario.context.get("chain")
    for key in over:
        channel = "implied_vol" if key == "skew" and chain else KEY_CHANNEL[key]
        if key == "basis" and chain:
            keys[key] = {"channel": "none", "source": "none"}
            notes.append("scenario basis: acts through the greeks market state's basis_pressure index (the model's "
                         "conditioning: regime vector and MM indices, read by the jumps parts); no estimated "
                         "multiplier of the cone")
        elif channel is None:
            keys[key] = {"channel": "none", "source": "none"}
            notes.append(f"scenario {key}: no estimated effect on the cone ({NO_EFFECT[key]}); it changes the "
                         "state's descriptors and regime vector only")
        else:
            keys[key] = {"channel": channel, "source": "model" if channel == "model" else sens.fits[channel].source}
    values: dict[str, tuple[float, float]] = {}
    moved = {KEY_CHANNEL[k] for k in over} | ({"implied_vol"} if chain and "skew" in over else set())
    if "implied_vol" in moved:
        values["implied_vol"] = _iv_channel(actual, over, notes)
        if chain and "skew" in over:  # the skewed chain's 30-day variance swap over the unskewed one's
            values["implied_vol"] = (values["implied_vol"][0],
                                     values["implied_vol"][1] * math.sqrt(chain["skew_vs_ratio"]))
    if "inventory" in moved:
        i0, i1 = (s.mm_indices.get("inventory_unwind") for s in (actual, scenario))
        values["inventory"] = (0.0 if i0 is None else float(i0), 0.0 if i1 is None else float(i1))
    log_mult = np.zeros(len(LEAD_BLOCKS))
    channels: dict[str, dict[str, Any]] = {}
    for name, (v0, v1) in values.items():
        fit = sens.fits[name]
        x0, x1 = _regressors(name, v0), _regressors(name, v1)
        log_mult = log_mult + fit.beta @ (x1 - x0)
        channels[name] = {
            "from": v0,
            "to": v1,
            "unit": "implied vol, annualised %" if name == "implied_vol" else "inventory_unwind index",
            "keys": sorted(k for k in over if KEY_CHANNEL[k] == name or (k == "skew" and chain and
                                                                           name == "implied_vol")),
            "source": fit.source,
            "sensitivity": fit.to_dict(),
        }
        if fit.source == "prior":
            notes.append(f"scenario {name} channel: {sens.asset} has too little history of it before the origin; "
                         f"the documented prior sensitivity is used ({fit.channel.prior_source})")
        elif np.any((x1 < fit.x_range[:, 0]) | (x1 > fit.x_range[:, 1])) and np.any(x1 != x0):
            lo, hi = fit.x_range[:, 0], fit.x_range[:, 1]
            seen = f"{math.exp(lo[0]):.4g} to {math.exp(hi[0]):.4g}" if name == "implied_vol" else \
                f"{-hi[1]:.3g} to {hi[0]:.3g}"
            notes.append(f"scenario {name} channel: {channels[name]['to']:.4g} is outside the range of "
                         f"{sens.asset}'s history ({seen}); its sensitivity is extrapolated")
    lo, hi = (math.log(v) for v in MULTIPLIER_RANGE)
    capped = np.clip(log_mult, lo, hi)
    if np.any(capped != log_mult):
        notes.append(f"scenario: the channels' volatility multiplier was capped to [{MULTIPLIER_RANGE[0]:g}, "
                     f"{MULTIPLIER_RANGE[1]:g}] in some lead blocks")
    return ScenarioEffect(capped, channels, keys, tuple(notes))


def _regressors(channel: str, value: float) -> FloatArray:
    """A channel's regressors at one value: ``[log IV]``, or the inventory index by side."""
    if channel == "implied_vol":
        return np.array([math.log(value)])
    return np.array([max(value, 0.0), max(-value, 0.0)])


def _iv_channel(actual: MarketState, over: Mapping[str, float], notes: list[str]) -> tuple[float, float]:
    """Implied vol (annualised %) at the origin and in the scenario."""
    iv = actual.descriptors.get("implied_vol")
    if iv is None or not iv > 0:
        rv_short, rv_long = actual.descriptors.get("rv_short", 0.0), actual.descriptors.get("rv_long", 0.0)
        iv = max(rv_short, 0.1 * rv_long, 1e-6) * _ANNUAL
    iv_new = over.get("iv_level", iv)
    if "gamma_squeeze" in over:
        iv_new = _iv_for_gamma(actual, over, iv_new, notes)
    return float(iv), float(iv_new)


def _gamma_raw(actual: MarketState, over: Mapping[str, float], log_iv: FloatArray) -> FloatArray:
    """``gamma_squeeze`` before its clip, as the kernel computes it with the scenario's inputs and
    implied vols ``exp(log_iv)`` (components standardised as for an ``iv_level`` override)."""
    ctx = actual.context
    m = log_iv.size
    base = {k: np.full(m, v, dtype=float) for k, v in ctx["base"].items()}
    base["rv_short"] = base["rv_short"] * over.get("rv_shock", 1.0)
    base["iv"] = np.exp(log_iv)
    comps = components(base)
    comps = {k: comps[k] for k in INDEX_COMPONENTS["gamma_squeeze"]}
    hist = {k: np.repeat(_padded(ctx["history"][k], HISTORY_WIDTHS[k]), m, axis=0) for k in comps}
    return indices(component_zscores(comps, hist, frozenset(comps)), clip=False)["gamma_squeeze"]


def _iv_for_gamma(actual: MarketState, over: Mapping[str, float], iv_before: float, notes: list[str]) -> float:
    """The implied vol, within the ``iv_level`` range, at which ``gamma_squeeze`` reads its override.

    ``iv_before`` (the scenario's implied vol without the index override) when the
    index already reads the target there.  Otherwise the root of ``raw(log IV) =
    target`` for the unclipped index, which increases with implied vol (Illinois
    false position; a target of +-3 gives the smallest move that reaches the clip).
    """
    target = over["gamma_squeeze"]
    lo, hi = (math.log(v) for v in _IV_BOUNDS)
    x0 = math.log(iv_before)
    g_lo, g0, g_hi = (float(v) - target for v in _gamma_raw(actual, over, np.array([lo, x0, hi])))
    if float(np.clip(g0 + target, -INDEX_CLIP, INDEX_CLIP)) == target:
        return iv_before
    if not (np.isfinite(g_lo) and np.isfinite(g0) and np.isfinite(g_hi)):
        notes.append(f"scenario gamma_squeeze={target:g}: the index is undefined at this origin (no realised "
                     "volatility to compare implied vol with); the implied-vol channel does not move")
        return iv_before
    if g_hi < 0 or g_lo > 0:
        bound = _IV_BOUNDS[1] if g0 < 0 else _IV_BOUNDS[0]
        notes.append(f"scenario gamma_squeeze={target:g}: not reachable with implied vol in "
                     f"[{_IV_BOUNDS[0]:g}, {_IV_BOUNDS[1]:g}]; implied vol {bound:g} used")
        return bound
    a, fa, b, fb = (lo, g_lo, x0, g0) if g0 > 0 else (x0, g0, hi, g_hi)
    side = 0
    for _ in range(60):
        x = b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
        fx = float(_gamma_raw(actual, over, np.array([x]))[0]) - target
        if abs(fx) < 1e-10 or abs(b - a) < 1e-12:
            return math.exp(x)
        if (fx > 0) == (fb > 0):
            b, fb = x, fx
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a, fa = x, fx
            if side == 1:
                fb *= 0.5
            side = 1
    return math.exp(x)


def _padded(view: np.ndarray, width: int) -> np.ndarray:
    """A stored history view as one (1, width) row, NaN in front, as `past_windows` builds it."""
    row = np.full(width, np.nan)
    if len(view):
        row[width - len(view) :] = view
    return row[None, :]


__all__ = [
    "KEY_CHANNEL", "MULTIPLIER_RANGE", "SCENARIO_RANGES", "ScenarioEffect", "apply_scenario", "scenario_effect",
    "validate_overrides", "vol_multiplier",
]
