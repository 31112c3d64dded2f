"""The ``greeks`` market-state part: dealer greeks exposures of an options chain -> market state and MM indices.

Chain (`aetheris_ray.data.chains`), in this order of preference at each origin:

1. ``observed``: the newest snapshot of ``data.series["options_chain"]`` known at
   the cutoff and at most a week old;
2. ``from_implied_vol_index``: an SVI chain built from the implied-vol index at the
   origin (`chains.svi_smiles`: stated parameters, reprices the index); never
   presented as observed: the state's ``context["chain_source"]`` says so and the
   engine puts it in ``metadata.chain_source`` and a warning;
3. ``none``: the state is exactly the ``indices`` variant's (`features.build`).

Greeks: Black (zero rates, forward = spot) prices in PyTorch, float64; delta, gamma,
vanna (d delta / d sigma) and charm (d delta / d t, t calendar time, = -d delta / d T)
by autograd (`bs_greeks`).

Dealer convention (the SqueezeMetrics one, stated): dealers are **long the calls**
(customers overwrite) and **short the puts** (customers buy protection): sign
``s = +1`` for calls, ``-1`` for puts.  Gamma exposure per option, in USD of delta
change per 1 % move of the underlying, ``GEX = s * gamma * OI * S^2 * 0.01``
(`gamma_exposure` sums it by strike).  Positive total GEX: dealers long gamma, they
sell rallies and buy dips (moves damped); negative: dealers short gamma (moves
amplified).  Vanna exposure ``s * vanna * OI * S * 0.01`` (USD of delta per vol
point), charm exposure ``s * charm * OI * S / 365`` (USD of delta per day).

Attention over strikes (fixed, no training): each option of a snapshot gets the
weight ``softmax_i(-|ln(K_i / S)| / TAU + ln OI_i)`` (options with zero OI get none).
Pooled "tilts" in [-1, 1]: ``tilt_X = sum_i w_i s_i X_i / sum_i w_i |X_i|`` for X =
gamma, vanna, charm exposure.  MM indices (same keys as ``indices``, in [-3, 3]),
each the clipped ``(x_chain + x_base) / sqrt(k)`` over the ``k`` terms present, with
``x_base`` the ``indices`` variant's value at the origin:

==================  =============================  ==========================================
index               x_chain                        x_base
==================  =============================  ==========================================
gamma_squeeze       ``-3 * tilt_gamma``            implied vol rich to realised (``indices``)
                    (dealers short gamma: +)
inventory_unwind    ``3 * tilt_charm`` (dealers'   funding crowding (``indices``)
                    delta drifts up: they sell)
basis_pressure      --                             basis (``indices``) and funding
                                                   (``inventory_unwind`` of ``indices``): the
                                                   perpetual's premium in both
==================  =============================  ==========================================

A constructed chain's open interest is a stated profile, not positioning: for it
the chain terms enter only as their move away from the chain constructed at the
origin (a scenario), added to ``x_base`` (``_indices``), so an unconditional state
on a constructed chain has the ``indices`` values of gamma_squeeze and
inventory_unwind.

Descriptors added: ``chain_gex`` (total GEX, USD per 1 %), ``chain_gex_per_oi``
(per contract of OI; scale-free, the only GEX figure comparable for a constructed
chain whose OI scale is stated), ``gamma_tilt``, ``vanna_tilt``, ``charm_tilt``,
``chain_iv_30d`` (the chain's 30-day variance-swap vol, annualised %), and ``skew``
= the chain's smile correlation (SVI ``rho``; estimated from the near-the-money
slope of an observed chain), which also fills the regime vector's ``skew`` element.

Scenarios (`chain_scenario`, called by `aetheris_ray.scenario.apply_scenario`):
``iv_level`` rebuilds the constructed chain at that level (an observed chain's IVs
are scaled to it); ``skew`` sets the smile's ``rho`` holding the at-the-money
variance (the variance swap moves with the wings: its ratio to the unskewed chain
is ``context["chain"]["skew_vs_ratio"]``, which moves the implied-vol channel);
``basis`` and ``funding_rate`` move ``basis_pressure``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from aetheris_ray._typing import FloatArray
from aetheris_ray.data.chains import (
    CONSTRUCTED_EXPIRIES,
    CONSTRUCTED_Z,
    SVI_BETA,
    SVI_RHO,
    VS_GRID_Z,
    constructed_open_interest,
    snapshot,
    svi_smiles,
    variance_swap,
    vix_style_index,
)
from aetheris_ray.data.schema import cutoff_for
from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.build import compute_state, compute_states
from aetheris_ray.features.mm_indices import INDEX_CLIP
from aetheris_ray.features.regime import REGIME_FEATURES
from aetheris_ray.features.state import MarketState

__all__ = [
    "TAU", "DEALER_SIGN", "GreeksMarketState", "attention_weights", "bs_greeks", "bs_price", "chain_scenario",
    "gamma_exposure",
]

#: Temperature of the attention over strikes, in log-moneyness.
TAU = 0.1
#: Dealer position sign by option type (dealers long calls, short puts).
DEALER_SIGN = {"call": 1.0, "put": -1.0}
#: Shortest time to expiry used in the greeks (years; one hour).
MIN_T = 1.0 / (365.0 * 24.0)
_YEAR_DAYS = 365.0
_VEC = {name: i for i, (name, _) in enumerate(REGIME_FEATURES)}
_MM = ("gamma_squeeze", "inventory_unwind", "basis_pressure")
_NOTES = {
    "observed": "options chain: observed snapshot (as_of {as_of})",
    "from_implied_vol_index": "options chain: none observed; the greeks market state uses a chain CONSTRUCTED from "
                              "the implied-vol index ({iv:.4g} %, SVI smile with stated parameters, "
                              "aetheris_ray.data.chains), not observed data",
}


# -- Black-Scholes in torch --------------------------------------------------------------


def bs_price(spot: Any, strike: Any, t: Any, iv: Any, call: Any) -> Any:
    """Black price (zero rates, forward = spot) of calls and puts, elementwise on torch tensors.

    Parameters
    ----------
    spot, strike, t, iv : torch.Tensor, shape (n,)
        Underlying, strike, years to expiry (> 0), implied vol (decimal, > 0).
    call : torch.Tensor of bool, shape (n,)

    Returns
    -------
    torch.Tensor, shape (n,)
    """
    import torch

    sw = iv * torch.sqrt(t)
    d1 = (torch.log(spot / strike) + 0.5 * sw * sw) / sw
    d2 = d1 - sw
    c = spot * torch.special.ndtr(d1) - strike * torch.special.ndtr(d2)
    return torch.where(call, c, c - spot + strike)


def bs_greeks(spot: FloatArray, strike: FloatArray, t: FloatArray, iv: FloatArray,
              call: np.ndarray) -> dict[str, FloatArray]:
    """Price, delta, gamma, vanna and charm by autograd through `bs_price`.

    Parameters
    ----------
    spot, strike, t, iv : ndarray, shape (n,)
        As in `bs_price` (``t`` floored at `MIN_T`).
    call : ndarray of bool, shape (n,)

    Returns
    -------
    dict name -> ndarray, shape (n,)
        ``price``; ``delta`` = dP/dS; ``gamma`` = d2P/dS2; ``vanna`` = d delta / d sigma
        (per unit of decimal vol); ``charm`` = d delta / dt = -d delta / dT (per year of
        calendar time passing).
    """
    import torch

    f64 = torch.float64
    s = torch.tensor(np.array(spot, dtype=float), dtype=f64).requires_grad_(True)
    sig = torch.tensor(np.array(iv, dtype=float), dtype=f64).requires_grad_(True)
    tt = torch.tensor(np.maximum(np.asarray(t, dtype=float), MIN_T), dtype=f64).requires_grad_(True)
    k = torch.tensor(np.array(strike, dtype=float), dtype=f64)
    c = torch.tensor(np.array(call, dtype=bool))
    price = bs_price(s, k, tt, sig, c)
    (delta,) = torch.autograd.grad(price.sum(), s, create_graph=True)
    gamma, vanna, d_t = torch.autograd.grad(delta.sum(), (s, sig, tt))
    return {"price": price.detach().numpy(), "delta": delta.detach().numpy(), "gamma": gamma.numpy(),
            "vanna": vanna.numpy(), "charm": -d_t.numpy()}


# -- exposures and attention -------------------------------------------------------------


def _years(chain: pd.DataFrame) -> FloatArray:
    ts = pd.DatetimeIndex(chain["ts"]).as_unit("ns").asi8
    return (pd.DatetimeIndex(chain["expiry"]).as_unit("ns").asi8 - ts) / (86400e9 * _YEAR_DAYS)


def gamma_exposure(chain: pd.DataFrame, spot: float) -> pd.DataFrame:
    """Dealer gamma exposure by strike (module docstring's sign convention), USD per 1 % move.

    Parameters
    ----------
    chain : DataFrame
        One snapshot, columns `aetheris_ray.data.chains.CHAIN_COLUMNS`.
    spot : float

    Returns
    -------
    DataFrame indexed by strike (ascending), columns ``call``, ``put``, ``total``
        ``call`` >= 0 (dealers long calls), ``put`` <= 0 (dealers short puts).
    """
    if not (spot > 0):
        raise InvalidInput(f"spot={spot!r} must be a positive price")
    call = chain["call"].to_numpy(dtype=bool)
    n = len(chain)
    g = bs_greeks(np.full(n, float(spot)), chain["strike"].to_numpy(dtype=float), _years(chain),
                  chain["iv"].to_numpy(dtype=float), call)["gamma"]
    dollar = g * chain["open_interest"].to_numpy(dtype=float) * spot * spot * 0.01
    frame = pd.DataFrame({"strike": chain["strike"].to_numpy(dtype=float),
                          "call": np.where(call, dollar, 0.0), "put": np.where(call, 0.0, -dollar)})
    out = frame.groupby("strike").sum()
    out["total"] = out["call"] + out["put"]
    return out


def attention_weights(log_moneyness: FloatArray, open_interest: FloatArray, group: np.ndarray,
                      n_groups: int) -> FloatArray:
    """``softmax(-|ln(K/S)| / TAU + ln OI)`` within each group (snapshot); zero-OI options get weight 0.

    Parameters
    ----------
    log_moneyness, open_interest : ndarray, shape (n,)
    group : ndarray of int, shape (n,)
        Snapshot (origin) of each option, in [0, n_groups).
    n_groups : int

    Returns
    -------
    ndarray, shape (n,)
        Non-negative, summing to 1 within every group that has positive OI.
    """
    oi = np.asarray(open_interest, dtype=float)
    logit = np.where(oi > 0, -np.abs(log_moneyness) / TAU + np.log(np.where(oi > 0, oi, 1.0)), -np.inf)
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, group, logit)
    e = np.where(np.isfinite(logit), np.exp(logit - np.where(np.isfinite(top), top, 0.0)[group]), 0.0)
    total = np.bincount(group, weights=e, minlength=n_groups)
    return e / np.where(total > 0, total, 1.0)[group]


@dataclass(frozen=True)
class _Chains:
    """Options of many snapshots, flattened (axis 0 = option); ``group`` = snapshot index."""

    strike: FloatArray
    call: np.ndarray
    iv: FloatArray
    oi: FloatArray
    t: FloatArray
    spot: FloatArray  # per option
    group: np.ndarray
    n: int


def _features(c: _Chains) -> dict[str, FloatArray]:
    """Pooled exposures per snapshot: tilts in [-1, 1], total and per-OI GEX; each shape (c.n,)."""
    g = bs_greeks(c.spot, c.strike, c.t, c.iv, c.call)
    sign = np.where(c.call, DEALER_SIGN["call"], DEALER_SIGN["put"])
    w = attention_weights(np.log(c.strike / c.spot), c.oi, c.group, c.n)
    expo = {"gamma": g["gamma"] * c.oi * c.spot**2 * 0.01, "vanna": g["vanna"] * c.oi * c.spot * 0.01,
            "charm": g["charm"] * c.oi * c.spot / _YEAR_DAYS}
    out = {}
    for name, x in expo.items():
        num = np.bincount(c.group, weights=w * sign * x, minlength=c.n)
        den = np.bincount(c.group, weights=w * np.abs(x), minlength=c.n)
        out[f"{name}_tilt"] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    gex = np.bincount(c.group, weights=sign * expo["gamma"], minlength=c.n)
    oi = np.bincount(c.group, weights=c.oi, minlength=c.n)
    out["chain_gex"] = gex
    out["chain_gex_per_oi"] = np.where(oi > 0, gex / np.where(oi > 0, oi, 1.0), np.nan)
    return out


def _combine(*terms: float) -> float | None:
    """``sum / sqrt(k)`` of the finite terms, clipped to +-`INDEX_CLIP`; None when none is finite."""
    x = [float(v) for v in terms if v is not None and math.isfinite(v)]
    if not x:
        return None
    return float(np.clip(sum(x) / math.sqrt(len(x)), -INDEX_CLIP, INDEX_CLIP))


def _indices(feat: Mapping[str, float], base: Mapping[str, float | None],
             ref: Mapping[str, float] | None = None) -> dict[str, float | None]:
    """The three MM indices from a snapshot's tilts and the ``indices`` variant's values (module table).

    ``ref`` (constructed chains): the tilts of the chain constructed at the origin; a
    constructed chain's open interest is a stated profile, not positioning, so only
    its move away from ``ref`` (a scenario) shifts the indices, additively.
    """
    gamma, charm = -INDEX_CLIP * feat["gamma_tilt"], INDEX_CLIP * feat["charm_tilt"]
    pressure = _combine(base.get("basis_pressure"), base.get("inventory_unwind"))
    if ref is None:
        return {"gamma_squeeze": _combine(gamma, base.get("gamma_squeeze")),
                "inventory_unwind": _combine(charm, base.get("inventory_unwind")), "basis_pressure": pressure}
    out: dict[str, float | None] = {}
    for key, x, x0 in (("gamma_squeeze", gamma, -INDEX_CLIP * ref["gamma_tilt"]),
                       ("inventory_unwind", charm, INDEX_CLIP * ref["charm_tilt"])):
        b, shift = base.get(key), x - x0
        out[key] = None if b is None and shift == 0.0 else \
            float(np.clip((0.0 if b is None else b) + shift, -INDEX_CLIP, INDEX_CLIP))
    out["basis_pressure"] = pressure
    return out


# -- chains at origins -------------------------------------------------------------------


def _constructed(levels: FloatArray, spots: FloatArray, rho: FloatArray) -> tuple[_Chains, FloatArray]:
    """Constructed chains of many origins (`chains.chain_from_index` layout) and each one's skew variance ratio.

    The level ``a`` is solved at `SVI_RHO`; ``rho`` (the ``skew`` scenario) then replaces the
    correlation, so the at-the-money variance holds and the wings move.

    Returns
    -------
    _Chains
        ``2 * len(CONSTRUCTED_EXPIRIES) * len(CONSTRUCTED_Z)`` options per origin.
    ndarray, shape (n,)
        30-day variance swap of the chain with ``rho`` over the one with `SVI_RHO` (1 when equal).
    """
    n = levels.size
    smile = svi_smiles(levels, SVI_RHO)
    skewed = replace(smile, rho=np.broadcast_to(np.clip(rho, -0.99, 0.99)[:, None], smile.a.shape).copy())
    z = np.asarray(CONSTRUCTED_Z)
    root = np.sqrt((levels[:, None] / 100.0) ** 2 * smile.t[None, :])  # (n, e)
    k = z[None, None, :] * root[..., None]  # (n, e, z)
    iv = np.sqrt(np.maximum(skewed.total_variance(k), 1e-12) / smile.t[None, :, None])
    j30 = list(CONSTRUCTED_EXPIRIES).index(30)
    kk = VS_GRID_Z[None, :] * root[:, j30, None]
    vs0 = variance_swap(kk, smile.total_variance(kk[:, None, :])[:, j30])
    vs1 = variance_swap(kk, skewed.total_variance(kk[:, None, :])[:, j30])
    oi = constructed_open_interest()  # (e, z, 2)
    shape = (n, *oi.shape)
    per = int(np.prod(oi.shape))
    strike = np.broadcast_to((spots[:, None, None] * np.exp(k))[..., None], shape)
    chains = _Chains(
        strike=strike.reshape(-1),
        call=np.broadcast_to(np.array([True, False]), shape).reshape(-1),
        iv=np.broadcast_to(iv[..., None], shape).reshape(-1),
        oi=np.broadcast_to(oi, shape).reshape(-1),
        t=np.broadcast_to(smile.t[None, :, None, None], shape).reshape(-1),
        spot=np.repeat(spots, per),
        group=np.repeat(np.arange(n), per),
        n=n,
    )
    return chains, vs1 / vs0


def _observed(frames: Sequence[pd.DataFrame], spots: FloatArray) -> _Chains:
    """Observed snapshots flattened (forward = the ``underlying`` column where given, else the spot)."""
    parts = []
    for i, (f, s) in enumerate(zip(frames, spots)):
        u = f["underlying"].to_numpy(dtype=float)
        parts.append((f["strike"].to_numpy(dtype=float), f["call"].to_numpy(dtype=bool), f["iv"].to_numpy(dtype=float),
                      f["open_interest"].to_numpy(dtype=float), _years(f), np.where(u > 0, u, s),
                      np.full(len(f), i)))
    cols = [np.concatenate(c) for c in zip(*parts)]
    return _Chains(*cols, n=len(frames))


def _smile_rho(f: pd.DataFrame, spot: float) -> float:
    """The smile correlation of an observed snapshot: near-the-money slope of total variance in
    log-moneyness over ``SVI_BETA sqrt(theta_atm)``, per expiry, OI-weighted, clipped to +-0.99."""
    t = _years(f)
    w = f["iv"].to_numpy(dtype=float) ** 2 * t
    k = np.log(f["strike"].to_numpy(dtype=float) / spot)
    rhos, weights = [], []
    for e in np.unique(t):
        sel = t == e
        theta = float(np.interp(0.0, *zip(*sorted(zip(k[sel], w[sel]))))) if sel.sum() > 1 else float(w[sel][0])
        near = sel & (np.abs(k) <= 1.5 * math.sqrt(max(theta, 1e-12)))
        if np.unique(k[near]).size < 2:
            continue
        slope = np.polyfit(k[near], w[near], 1)[0]
        rhos.append(slope / (SVI_BETA * math.sqrt(max(theta, 1e-12))))
        weights.append(float(f["open_interest"].to_numpy(dtype=float)[sel].sum()) + 1e-12)
    if not rhos:
        return float("nan")
    return float(np.clip(np.average(rhos, weights=weights), -0.99, 0.99))


def _skewed_observed(f: pd.DataFrame, spot: float, rho: float, rho_new: float) -> pd.DataFrame:
    """An observed snapshot with its smile tilted from ``rho`` to ``rho_new`` (ATM variance held)."""
    t = _years(f)
    iv = f["iv"].to_numpy(dtype=float)
    k = np.log(f["strike"].to_numpy(dtype=float) / spot)
    theta = np.empty_like(t)
    for e in np.unique(t):
        sel = t == e
        order = np.argsort(k[sel])
        theta[sel] = np.interp(0.0, k[sel][order], (iv[sel] ** 2 * e)[order])
    w = np.maximum(iv**2 * t + SVI_BETA * np.sqrt(theta) * (rho_new - rho) * k, 1e-4 * theta)
    return f.assign(iv=np.sqrt(w / t))


def _apply(state: MarketState, feat: Mapping[str, float], info: dict[str, Any]) -> MarketState:
    """``state`` (the ``indices`` one at the origin) with the chain's indices, descriptors, vector and context."""
    base_mm = state.context.get("base_mm", state.mm_indices)
    mm = _indices(feat, base_mm, info.get("tilt_ref"))
    for key in _MM:  # a scenario override of an index wins (aetheris_ray.scenario)
        if key in state.overrides:
            mm[key] = state.overrides[key]
    vector = np.array(state.regime_vector, dtype=float)
    for key in _MM:
        vector[_VEC[key]] = 0.0 if mm[key] is None else float(np.clip(mm[key], -INDEX_CLIP, INDEX_CLIP))
    rho = float(state.overrides.get("skew", info["rho"]))
    vector[_VEC["skew"]] = float(np.clip(rho, -1.0, 1.0)) if math.isfinite(rho) else 0.0
    descriptors = {**state.descriptors, **{k: float(v) for k, v in feat.items() if math.isfinite(v)}}
    if math.isfinite(rho):
        descriptors["skew"] = rho
    context = {**state.context, "base_mm": dict(base_mm), "chain": info, "chain_source": info["source"],
               "chain_note": _NOTES[info["source"]].format(as_of=info.get("as_of"), iv=info.get("iv_index", 0.0))}
    missing = tuple(m for m in state.missing if m != "options_chain")
    return state.with_(mm_indices=mm, regime_vector=vector, descriptors=descriptors, context=context,
                       missing=missing)


def _with_chains(data: Any, states: list[MarketState]) -> list[MarketState]:
    """The ``indices`` states turned into greeks states where a chain (observed or constructed) exists."""
    out: list[MarketState | None] = [None] * len(states)
    observed: list[tuple[int, pd.DataFrame]] = []
    constructed: list[int] = []
    for i, s in enumerate(states):
        snap = snapshot(data, cutoff_for(s.origin))
        iv = s.descriptors.get("implied_vol")
        if snap is not None:
            observed.append((i, snap))
        elif iv is not None and math.isfinite(iv) and iv > 0 and s.spot > 0:
            constructed.append(i)
        else:
            out[i] = s.with_(context={**s.context, "chain_source": "none"})
    if constructed:
        levels = np.array([states[i].descriptors["implied_vol"] for i in constructed])
        spots = np.array([states[i].spot for i in constructed])
        chains, _ = _constructed(levels, spots, np.full(levels.size, SVI_RHO))
        feats = _features(chains)
        for j, i in enumerate(constructed):
            info = {"source": "from_implied_vol_index", "iv_index": float(levels[j]), "rho": SVI_RHO,
                    "spot": float(spots[j]), "skew_vs_ratio": 1.0}
            feat = {k: float(v[j]) for k, v in feats.items()}
            info["tilt_ref"] = {k: feat[k] for k in ("gamma_tilt", "charm_tilt")}
            feat["chain_iv_30d"] = float(levels[j])
            out[i] = _apply(states[i], feat, info)
    if observed:
        frames = [f for _, f in observed]
        spots = np.array([states[i].spot for i, _ in observed])
        feats = _features(_observed(frames, spots))
        for j, (i, f) in enumerate(observed):
            fwd = _forward(f, spots[j])
            info = {"source": "observed", "frame": f, "rho": _smile_rho(f, fwd), "spot": float(spots[j]),
                    "as_of": str(pd.Timestamp(f["ts"].iloc[0])), "skew_vs_ratio": 1.0}
            feat = {k: float(v[j]) for k, v in feats.items()}
            feat["chain_iv_30d"] = vix_style_index(f, fwd)
            out[i] = _apply(states[i], feat, info)
    return [s for s in out if s is not None]


def _forward(f: pd.DataFrame, spot: float) -> float:
    u = f["underlying"].to_numpy(dtype=float)
    u = u[np.isfinite(u) & (u > 0)]
    return float(np.median(u)) if u.size else float(spot)


def chain_scenario(state: MarketState, overrides: Mapping[str, float]) -> MarketState:
    """Recompute a greeks state's chain, indices and descriptors under scenario overrides.

    Parameters
    ----------
    state : MarketState
        ``apply_scenario``'s state, recomputed by the ``indices`` kernel (its
        ``mm_indices`` are that kernel's, overrides of the indices applied).
    overrides : mapping
        All overrides applied (validated).

    Returns
    -------
    MarketState
        The chain under the scenario (``iv_level``, ``skew``), its indices combined
        with the kernel's, ``context["chain"]["skew_vs_ratio"]`` set.
    """
    info = dict(state.context["chain"])
    base_mm = {k: (state.overrides.get(k) if k in state.overrides else v) for k, v in state.mm_indices.items()}
    rho_new = float(overrides.get("skew", info["rho"]))
    if info["source"] == "from_implied_vol_index":
        level = float(overrides.get("iv_level", info["iv_index"]))
        chains, ratio = _constructed(np.array([level]), np.array([info["spot"]]), np.array([rho_new]))
        feat = {k: float(v[0]) for k, v in _features(chains).items()}
        feat["chain_iv_30d"] = level * math.sqrt(float(ratio[0]))
        info.update(iv_index=level, skew_vs_ratio=float(ratio[0]))
    else:
        f = info["frame"]
        fwd = _forward(f, info["spot"])
        for _ in range(4 if "iv_level" in overrides else 0):  # the index of a truncated chain is not linear in IV
            f = f.assign(iv=f["iv"] * overrides["iv_level"] / vix_style_index(f, fwd))
        flat = vix_style_index(f, fwd)
        if math.isfinite(info["rho"]) and rho_new != info["rho"]:
            f = _skewed_observed(f, fwd, info["rho"], rho_new)
        feat = {k: float(v[0]) for k, v in _features(_observed([f], np.array([info["spot"]]))).items()}
        feat["chain_iv_30d"] = vix_style_index(f, fwd)
        info.update(frame=f, skew_vs_ratio=(feat["chain_iv_30d"] / flat) ** 2)
    info["rho_scenario"] = rho_new
    out = _apply(state.with_(context={**state.context, "base_mm": base_mm}), feat, info)
    return out


@dataclass(frozen=True)
class GreeksMarketState:
    """Dealer greeks of an observed or constructed options chain (module docstring); ``indices`` without one."""

    kind: ClassVar[str] = "market_state"
    name: ClassVar[str] = "greeks"
    requires_torch: ClassVar[bool] = True

    def compute_state(self, data: Any, origin: Any) -> MarketState:
        """The state at one origin (data known at its cutoff only)."""
        return _with_chains(data, [compute_state(data, origin)])[0]

    def compute_states(self, data: Any, origins: Sequence[Any]) -> list[MarketState]:
        """States at many origins of one asset at once (same numbers as one at a time)."""
        return _with_chains(data, compute_states(data, origins))
