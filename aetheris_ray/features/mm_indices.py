"""Market-maker indices from implied vol, funding and basis (no options chain).

Each index is built from two raw components, each z-scored against its own
trailing history (`Z_WINDOW` bars, the current value included, at least
`MIN_Z_OBS` finite values), combined as ``(z_1 + z_2) / sqrt(k)`` over the
``k`` components available and clipped to [-3, 3]:

==================  ===========================================  ==========================================
index               components                                   positive means
==================  ===========================================  ==========================================
gamma_squeeze       g1 = log(IV_daily / rv_short),               implied vol rich to realised and rising:
                    g2 = log(IV_t / IV_{t-5})                    dealers short gamma, moves get amplified
inventory_unwind    u1 = funding_t (fraction/day),               crowded, persistent longs (downside unwind
                    u2 = mean funding over 14 bars               risk); negative: crowded shorts (squeeze)
basis_pressure      b1 = basis_t (fraction of spot),             perp rich to spot and richening (levered
                    b2 = basis_t - basis_{t-5}                   long demand); negative: backwardation
==================  ===========================================  ==========================================

``IV_daily = IV / 100 / sqrt(365)`` (IV in annualised percent, crypto trades 365
days).  An index is None when none of its components can be computed (input
absent, stale, or with fewer than `MIN_Z_OBS` values of history).

Dealer gamma exposure from an options chain is the SOTA market-maker variant;
the data has no chain, so this baseline uses the implied-vol proxy and reports
``options_chain`` as missing.
"""

from __future__ import annotations

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.features.stationarity import row_sum, safe_log_ratio, zscore

#: Trailing window (bars, current included) of the component z-scores: 1 year.
Z_WINDOW = 365
#: Fewest finite values (history plus current) a z-score rests on.
MIN_Z_OBS = 20
#: Lag (bars) of the change components g2 and b2.
CHANGE_LAG = 5
#: Bars averaged by the funding persistence component u2 (current included).
PERSISTENCE_WINDOW = 14
#: Index bound.
INDEX_CLIP = 3.0
DAYS_PER_YEAR = 365.0

#: Components of each index, and the input series whose absence makes it None.
INDEX_COMPONENTS = {
    "gamma_squeeze": ("g1", "g2"),
    "inventory_unwind": ("u1", "u2"),
    "basis_pressure": ("b1", "b2"),
}
INDEX_INPUT = {"gamma_squeeze": "implied_vol", "inventory_unwind": "funding", "basis_pressure": "basis"}

#: Cross-asset (center, scale) of each component.  Used ONLY by scenarios that set an
#: input the asset has no history of (say ``iv_level`` for an asset without IV data);
#: never for unconditional forecasts, whose components are standardised on their own history.
PRIORS = {
    "g1": (0.0, 0.3),
    "g2": (0.0, 0.1),
    "u1": (0.0003, 0.0005),
    "u2": (0.0003, 0.0005),
    "b1": (0.0, 0.002),
    "b2": (0.0, 0.001),
}


def components(base: dict[str, FloatArray]) -> dict[str, FloatArray]:
    """Raw components from the current inputs (elementwise; any common shape).

    Parameters
    ----------
    base : dict
        ``iv``, ``iv_lag`` (annualised %), ``rv_short`` (daily log-return std),
        ``funding`` (fraction/day), ``funding_prev_sum``, ``funding_prev_n`` (sum and
        count of the finite funding values of the previous ``PERSISTENCE_WINDOW - 1``
        bars), ``basis``, ``basis_lag`` (fraction of spot).  NaN = absent.

    Returns
    -------
    dict name -> ndarray
        ``g1, g2, u1, u2, b1, b2`` as in the module docstring; NaN where not computable.
    """
    iv = np.asarray(base["iv"], dtype=float)
    funding = np.asarray(base["funding"], dtype=float)
    basis = np.asarray(base["basis"], dtype=float)
    iv_daily = iv / 100.0 / np.sqrt(DAYS_PER_YEAR)
    persistence = (np.asarray(base["funding_prev_sum"]) + funding) / (np.asarray(base["funding_prev_n"]) + 1.0)
    return {
        "g1": safe_log_ratio(iv_daily, base["rv_short"]),
        "g2": safe_log_ratio(iv, base["iv_lag"]),
        "u1": funding,
        "u2": np.where(np.isnan(funding), np.nan, persistence),
        "b1": basis,
        "b2": basis - np.asarray(base["basis_lag"], dtype=float),
    }


def component_zscores(
    comps: dict[str, FloatArray],
    history: dict[str, FloatArray],
    prior_for: frozenset[str] = frozenset(),
) -> dict[str, FloatArray]:
    """z-score each component against its trailing history.

    Parameters
    ----------
    comps : dict name -> ndarray, shape (m,)
    history : dict name -> ndarray, shape (m, Z_WINDOW - 1)
        The component's values at the previous bars, oldest first, NaN = missing.
    prior_for : frozenset of str
        Components that fall back to `PRIORS` when their history is too short
        (scenario inputs only).

    Returns
    -------
    dict name -> ndarray, shape (m,)
    """
    keys = list(comps)
    m = len(comps[keys[0]])
    center = np.repeat([PRIORS[k][0] if k in prior_for else np.nan for k in keys], m)
    scale = np.repeat([PRIORS[k][1] for k in keys], m)
    z = zscore(
        np.concatenate([history[k] for k in keys]),
        np.concatenate([comps[k] for k in keys]),
        MIN_Z_OBS,
        (center, scale),
    )
    return dict(zip(keys, np.split(z, len(keys))))


def indices(z: dict[str, FloatArray], clip: bool = True) -> dict[str, FloatArray]:
    """Combine component z-scores into the three indices, clipped to +-`INDEX_CLIP` (unless ``clip`` is False).

    Returns
    -------
    dict name -> ndarray, shape (m,)
        NaN where no component of the index is available; an index whose
        components are not all keys of ``z`` is left out.

    Examples
    --------
    >>> out = indices({"g1": np.array([1.0]), "g2": np.array([1.0]), "u1": np.array([np.nan]),
    ...                "u2": np.array([np.nan]), "b1": np.array([9.0]), "b2": np.array([np.nan])})
    >>> [round(float(out[k][0]), 4) for k in ("gamma_squeeze", "basis_pressure")]
    [1.4142, 3.0]
    >>> bool(np.isnan(out["inventory_unwind"][0]))
    True
    """
    out = {}
    for name, keys in INDEX_COMPONENTS.items():
        if not all(k in z for k in keys):
            continue
        zs = np.stack([z[k] for k in keys], axis=1)
        valid = ~np.isnan(zs)
        k = np.count_nonzero(valid, axis=1)
        total = row_sum(np.where(valid, zs, 0.0))
        value = total / np.sqrt(np.maximum(k, 1))
        out[name] = np.where(k > 0, np.clip(value, -INDEX_CLIP, INDEX_CLIP) if clip else value, np.nan)
    return out


__all__ = [
    "INDEX_COMPONENTS",
    "INDEX_INPUT",
    "MIN_Z_OBS",
    "PRIORS",
    "Z_WINDOW",
    "component_zscores",
    "components",
    "indices",
]
