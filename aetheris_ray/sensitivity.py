"""Point-in-time sensitivities of forward realised volatility to the scenario channels.

A what-if override (`aetheris_ray.scenario`) moves the cone through a *channel*,
a quantity of the market state whose effect on future volatility is estimated
from the asset's own past, by the regression risk desks use for stress tests:
for every origin ``t`` before the forecast origin and every lead block
``(a, b)`` (the calibration buckets 1, 2-3, 4-7, 8-14, 15-30, 31-90 days),

    y_t = log sqrt(mean(r_{t+a}^2, ..., r_{t+b}^2))
        = c_0 + c_1 log rv_short_t + c_2 log rv_long_t + beta . x_t + e_t

``y`` is the log realised volatility of the daily returns in the block; the
controls are the realised vols the volatility model already sees, so ``beta`` is
the effect of the channel *on top of* what the model knows.  Only rows whose
whole block is known at the origin enter (``t + b <= origin``), so the estimate
at an origin never uses later data.  Standard errors are Newey-West (Bartlett,
``b - a`` lags for the overlapping blocks plus ``floor(4 (n/100)^(2/9))``).

The data estimate is combined with a prior (`CHANNELS`) by precision
(``posterior = (V^-1 + T^-1)^-1 (V^-1 beta_hat + T^-1 beta_0)``, ``V`` the HAC
covariance, ``T`` the prior's diagonal covariance): an asset without the series,
or with too few rows (`MIN_ROWS`, and at least 4 non-overlapping blocks), gets
the prior alone.

==================  ==========================================  ==================================================
channel             regressors                                  prior (mean +- sd, every lead block)
==================  ==========================================  ==================================================
``implied_vol``     ``log_iv``: log implied vol (annualised %)  0.5 +- 0.25 (published encompassing regressions of
                                                                log realised on log implied vol with lagged
                                                                realised vol put the weight of implied vol between
                                                                about 0.3 and 0.8; no implied-vol data before 2022)
``inventory``       ``inventory_up = max(I, 0)``,               BTC, data up to 2021-12-31 (funding from 2019-09):
                    ``inventory_down = max(-I, 0)``,            the mean over lead blocks of the block estimates,
                    ``I`` = ``inventory_unwind`` index          +- the mean of their standard errors
==================  ==========================================  ==================================================

The inventory index enters by side (crowded longs, crowded shorts): on BTC the
effect is positive on the crowded-long side and weaker, of unstable sign, on the
other, so one straight line through both sides would let a funding collapse calm
the market.  ``python -m aetheris_ray.sensitivity --data ../shared/data`` prints
the estimates for an asset and re-derives the inventory prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from aetheris_ray._typing import FloatArray
from aetheris_ray.data.schema import AssetData
from aetheris_ray.errors import InvalidInput

#: Lead blocks (first, last day ahead), equal to `aetheris_ray.calibration.BUCKETS`.
LEAD_BLOCKS: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (4, 7), (8, 14), (15, 30), (31, 90))
#: Fewest regression rows for a data estimate (a block also needs 4 non-overlapping windows).
MIN_ROWS = 60
#: A mean square (target or control) is floored at (FLOOR x rv_long)^2, and at 1e-12 (a flat day has log 0).
FLOOR = 0.1
#: Origin of the inventory prior (BTC, every block's rows known by then).
PRIOR_END = "2021-12-31"


@dataclass(frozen=True)
class Channel:
    """A scenario channel: its regressors, the per-bar values they come from and the prior."""

    name: str
    regressors: tuple[str, ...]
    prior_mean: tuple[float, ...]
    prior_sd: tuple[float, ...]
    prior_source: str

    def values(self, hist: dict[str, FloatArray]) -> FloatArray:
        """Regressor values per bar, shape (n_bars, n_regressors), NaN where absent."""
        if self.name == "implied_vol":
            iv = hist["iv"]
            return np.log(np.where(iv > 0, iv, np.nan))[:, None]
        index = hist["inventory_unwind"]
        return np.stack([np.maximum(index, 0.0), np.maximum(-index, 0.0)], axis=1)


#: The channels (see the module docstring for the priors).
CHANNELS: dict[str, Channel] = {
    "implied_vol": Channel(
        "implied_vol", ("log_iv",), (0.5,), (0.25,),
        "published range of the implied-vol weight (about 0.3-0.8) in log realised-vol regressions",
    ),
    "inventory": Channel(
        "inventory", ("inventory_up", "inventory_down"), (0.0719, 0.0419), (0.0424, 0.0666),
        f"BTC with data up to {PRIOR_END}: mean over lead blocks of the block estimates, +- their mean s.e.",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ChannelFit:
    """One channel's sensitivities at one origin, per lead block (axis 0) and regressor (axis 1).

    Attributes
    ----------
    beta, sd : ndarray, shape (n_blocks, n_regressors)
        Posterior mean and standard deviation: the sensitivities the scenarios use.
    data_beta, data_se : ndarray, shape (n_blocks, n_regressors)
        The asset's own estimate and its HAC standard error (NaN: no data estimate).
    n_rows : ndarray of int, shape (n_blocks,)
        Regression rows (0: none).
    x_range : ndarray, shape (n_regressors, 2)
        Smallest and largest regressor value in the asset's history (NaN: none).
    """

    channel: Channel
    beta: FloatArray
    sd: FloatArray
    data_beta: FloatArray
    data_se: FloatArray
    n_rows: np.ndarray
    x_range: FloatArray

    @property
    def source(self) -> str:
        """``data`` (every block estimated), ``data+prior`` (some), ``prior`` (none)."""
        fitted = int(np.count_nonzero(np.isfinite(self.data_beta).all(axis=1)))
        return "prior" if fitted == 0 else "data" if fitted == len(LEAD_BLOCKS) else "data+prior"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per regressor, lists over `LEAD_BLOCKS` (None where no data estimate): posterior
        ``beta`` and ``sd``, the asset's ``data_beta``, ``data_se`` and ``data_t``, the ``prior`` and the
        regressor's ``range`` in the asset's history."""
        out: dict[str, Any] = {"source": self.source, "blocks": [block_label(b) for b in LEAD_BLOCKS],
                               "n_rows": [int(v) for v in self.n_rows], "prior_source": self.channel.prior_source}
        for j, name in enumerate(self.channel.regressors):
            out[name] = {
                "beta": _floats(self.beta[:, j]),
                "sd": _floats(self.sd[:, j]),
                "data_beta": _floats(self.data_beta[:, j]),
                "data_se": _floats(self.data_se[:, j]),
                "data_t": _floats(self.data_beta[:, j] / self.data_se[:, j]),
                "prior": [self.channel.prior_mean[j], self.channel.prior_sd[j]],
                "range": _floats(self.x_range[j]),
            }
        return out


    @classmethod
    def from_dict(cls, d: dict[str, Any], channel: Channel) -> "ChannelFit":
        """Inverse of `to_dict`; `ValueError` when ``d`` was written with other priors or lead blocks."""
        if d["blocks"] != [block_label(b) for b in LEAD_BLOCKS]:
            raise ValueError(f"{channel.name}: lead blocks {d['blocks']} differ from {list(LEAD_BLOCKS)}")
        cols = []
        for j, name in enumerate(channel.regressors):
            r = d[name]
            if r["prior"] != [channel.prior_mean[j], channel.prior_sd[j]]:
                raise ValueError(f"{channel.name}.{name}: written with prior {r['prior']}")
            cols.append(r)

        def arr(field_: str) -> FloatArray:
            return np.array([[np.nan if v is None else v for v in c[field_]] for c in cols], dtype=float).T

        x_range = np.array([[np.nan if v is None else v for v in c["range"]] for c in cols], dtype=float)
        return cls(channel, arr("beta"), arr("sd"), arr("data_beta"), arr("data_se"),
                   np.array(d["n_rows"], dtype=int), x_range)


@dataclass(frozen=True)
class Sensitivities:
    """Every channel's fit for one asset at one origin (cached by the engine per asset and origin)."""

    asset: str
    origin: pd.Timestamp
    fits: dict[str, ChannelFit] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`from_dict` reads it back)."""
        return {"asset": self.asset, "origin": str(pd.Timestamp(self.origin).date()),
                "channels": {k: v.to_dict() for k, v in self.fits.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sensitivities":
        """Inverse of `to_dict`; `ValueError` when it was written with other channels, priors or blocks."""
        if set(d["channels"]) != set(CHANNELS):
            raise ValueError(f"channels {sorted(d['channels'])} differ from {sorted(CHANNELS)}")
        fits = {k: ChannelFit.from_dict(v, CHANNELS[k]) for k, v in d["channels"].items()}
        return cls(d["asset"], pd.Timestamp(d["origin"]), fits)


def block_label(block: tuple[int, int]) -> str:
    """``"1"``, ``"2-3"``...: a lead block as `aetheris_ray.calibration.BUCKET_LABELS` names it."""
    a, b = block
    return f"{a}" if a == b else f"{a}-{b}"


def _floats(x: FloatArray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=float).ravel()]


# -- the regression ----------------------------------------------------------------------------


def forward_log_vol(ret: FloatArray, floor: FloatArray, block: tuple[int, int]) -> FloatArray:
    """``log sqrt(mean r^2)`` over days ``t+a .. t+b`` at every bar ``t``, floored; NaN where not all known.

    >>> r = np.array([np.nan, 0.1, -0.1, 0.2, 0.0])
    >>> np.round(forward_log_vol(r, np.full(5, 1e-6), (1, 2)), 4).tolist()
    [-2.3026, -1.8444, -1.956, nan, nan]
    """
    r2 = np.square(np.asarray(ret, dtype=float))
    a, b = block
    n = r2.size
    out = np.full(n, np.nan)
    if n <= b:
        return out
    ok = np.isfinite(r2)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, r2, 0.0))])
    bad = np.concatenate([[0], np.cumsum(~ok)])
    t = np.arange(n - b)
    ms = (c[t + b + 1] - c[t + a]) / (b - a + 1)
    known = bad[t + b + 1] == bad[t + a]
    out[t] = np.where(known, 0.5 * np.log(np.maximum(ms, floor[t])), np.nan)
    return out


def forward_direction(ret: FloatArray, scale: FloatArray, block: tuple[int, int], kind: str) -> FloatArray:
    """Direction targets over days ``t+a .. t+b`` (diagnostics of `fit_channel`; NaN where not all known).

    ``kind="drift"``: the sum of the returns over ``scale_t sqrt(b - a + 1)``;
    ``kind="downside"``: the share of the block's squared returns on down days (NaN when all are 0).

    >>> r = np.array([np.nan, 0.1, -0.1, 0.2])
    >>> forward_direction(r, np.full(4, 0.1), (1, 2), "downside").round(2).tolist()
    [0.5, 0.2, nan, nan]
    """
    r = np.asarray(ret, dtype=float)
    a, b = block
    n = r.size
    out = np.full(n, np.nan)
    if n <= b:
        return out
    ok = np.isfinite(r)
    num = np.where(ok, r if kind == "drift" else np.where(r < 0, r * r, 0.0), 0.0)
    c_num = np.concatenate([[0.0], np.cumsum(num)])
    c_den = np.concatenate([[0.0], np.cumsum(np.where(ok, r * r, 0.0))])
    bad = np.concatenate([[0], np.cumsum(~ok)])
    t = np.arange(n - b)
    known = bad[t + b + 1] == bad[t + a]
    total = c_num[t + b + 1] - c_num[t + a]
    if kind == "drift":
        den = np.asarray(scale, dtype=float)[t] * math.sqrt(b - a + 1)
    else:
        den = c_den[t + b + 1] - c_den[t + a]
    with np.errstate(divide="ignore", invalid="ignore"):
        out[t] = np.where(known & (den > 0), total / np.where(den > 0, den, 1.0), np.nan)
    return out


def hac_ols(X: FloatArray, y: FloatArray, lags: int) -> tuple[FloatArray, FloatArray]:
    """OLS coefficients and their Newey-West (Bartlett) covariance.

    Parameters
    ----------
    X : ndarray, shape (n, p), full column rank
    y : ndarray, shape (n,)
    lags : int

    Returns
    -------
    beta : ndarray, shape (p,)
    cov : ndarray, shape (p, p)
    """
    xtx_inv = np.linalg.inv(X.T @ X)
    beta = xtx_inv @ (X.T @ y)
    u = X * (y - X @ beta)[:, None]
    s = u.T @ u
    for lag in range(1, min(lags, len(y) - 1) + 1):
        g = u[lag:].T @ u[:-lag]
        s += (1.0 - lag / (lags + 1.0)) * (g + g.T)
    return beta, xtx_inv @ s @ xtx_inv


def combine(beta_hat: FloatArray, cov: FloatArray, prior_mean: FloatArray, prior_sd: FloatArray
            ) -> tuple[FloatArray, FloatArray]:
    """Precision-weighted combination of a data estimate with an independent normal prior.

    >>> b, s = combine(np.array([1.0]), np.array([[1.0]]), np.array([0.0]), np.array([1.0]))
    >>> b.tolist(), np.round(s, 4).tolist()
    ([0.5], [0.7071])
    """
    t_inv = np.diag(1.0 / np.square(prior_sd))
    v_inv = np.linalg.inv(cov)
    post_cov = np.linalg.inv(v_inv + t_inv)
    post = post_cov @ (v_inv @ beta_hat + t_inv @ prior_mean)
    return post, np.sqrt(np.diag(post_cov))


def fit_channel(channel: Channel, hist: dict[str, FloatArray], use_prior: bool = True,
                target: str = "log_vol") -> ChannelFit:
    """Estimate one channel's sensitivities from per-bar history (`features.build.input_history`).

    Every row of ``hist`` must be known at the origin (the last row is the origin's bar).

    Parameters
    ----------
    channel : Channel
    hist : dict name -> ndarray, shape (n_bars,)
    use_prior : bool
        False: the data estimate alone (NaN where there is none), as used to derive priors.
    target : {"log_vol", "drift", "downside"}
        The left-hand side: forward log realised vol (what scenarios use), or one
        of the direction diagnostics of `forward_direction` (data estimates only).

    Returns
    -------
    ChannelFit
    """
    if target not in ("log_vol", "drift", "downside"):
        raise InvalidInput(f"target={target!r}: use 'log_vol', 'drift' or 'downside'")
    use_prior = use_prior and target == "log_vol"
    x = channel.values(hist)
    p = x.shape[1]
    rv_long = hist["rv_long"]
    floor = np.maximum(np.square(FLOOR * np.nan_to_num(rv_long)), 1e-12)
    controls = np.stack([0.5 * np.log(np.maximum(np.square(hist["rv_short"]), floor)),
                         0.5 * np.log(np.maximum(np.square(rv_long), floor))], axis=1)
    present = np.all(np.isfinite(x), axis=1)
    with np.errstate(invalid="ignore"):
        x_range = np.array([[np.min(col[present]), np.max(col[present])] if present.any() else [np.nan, np.nan]
                            for col in x.T])
    k = len(LEAD_BLOCKS)
    nan = np.full((k, p), np.nan)
    data_beta, data_se, n_rows = nan.copy(), nan.copy(), np.zeros(k, dtype=int)
    beta = np.broadcast_to(np.asarray(channel.prior_mean), (k, p)).copy() if use_prior else nan.copy()
    sd = np.broadcast_to(np.asarray(channel.prior_sd), (k, p)).copy() if use_prior else nan.copy()
    for i, block in enumerate(LEAD_BLOCKS):
        if target == "log_vol":
            y = forward_log_vol(hist["ret"], floor, block)
        else:
            y = forward_direction(hist["ret"], np.sqrt(np.maximum(np.square(np.nan_to_num(rv_long)), floor)), block,
                                  target)
        rows = present & np.isfinite(y) & np.all(np.isfinite(controls), axis=1)
        n = int(rows.sum())
        n_rows[i] = n
        span = block[1] - block[0] + 1
        if n < max(MIN_ROWS, 4 * span):
            continue
        X = np.column_stack([np.ones(n), controls[rows], x[rows]])
        if np.linalg.matrix_rank(X) < X.shape[1]:
            continue  # a regressor without variation: nothing to learn from these rows
        lags = span - 1 + int(4 * (n / 100.0) ** (2.0 / 9.0))
        b_all, cov_all = hac_ols(X, y[rows], lags)
        b_hat, cov = b_all[3:], cov_all[3:, 3:]
        if not (np.all(np.isfinite(cov)) and np.all(np.linalg.eigvalsh(cov) > 0)):
            continue
        data_beta[i], data_se[i] = b_hat, np.sqrt(np.diag(cov))
        if use_prior:
            beta[i], sd[i] = combine(b_hat, cov, np.asarray(channel.prior_mean), np.asarray(channel.prior_sd))
        else:
            beta[i], sd[i] = b_hat, data_se[i]
    return ChannelFit(channel, beta, sd, data_beta, data_se, n_rows, x_range)


def estimate(data: AssetData, origin: pd.Timestamp | str, use_prior: bool = True,
             channels: Sequence[str] = tuple(CHANNELS), target: str = "log_vol") -> Sensitivities:
    """Every channel's sensitivities for ``data`` at ``origin``, from data known at the origin only.

    Parameters
    ----------
    data : AssetData
        May extend past the origin: it is cut at ``cutoff_for(origin)`` first.
    origin : Timestamp or str
    use_prior : bool
        False: data estimates only (see `fit_channel`).
    channels : sequence of str
        Names in `CHANNELS`.
    target : str
        See `fit_channel` (the direction diagnostics ignore the prior).

    Returns
    -------
    Sensitivities

    Raises
    ------
    InvalidInput
        An unknown channel name.
    DataError
        Fewer than 2 daily closes known at the origin.
    """
    from aetheris_ray.features.build import input_history

    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise InvalidInput(f"channels {unknown} are not known; valid: {', '.join(CHANNELS)}")
    hist = input_history(data, origin, indices=("inventory_unwind",))
    fits = {name: fit_channel(CHANNELS[name], hist, use_prior, target) for name in channels}
    return Sensitivities(data.asset, pd.Timestamp(origin), fits)


def derive_prior(data: AssetData, channel: str = "inventory", end: str = PRIOR_END) -> tuple[list[float], list[float]]:
    """A channel's prior as `CHANNELS` states it: from ``data`` up to ``end``, per regressor,
    the mean over lead blocks of the block estimates and the mean of their standard errors.

    Raises
    ------
    InvalidInput
        No lead block has a data estimate.
    """
    fit = estimate(data, end, use_prior=False, channels=(channel,)).fits[channel]
    ok = np.isfinite(fit.data_beta).all(axis=1)
    if not ok.any():
        raise InvalidInput(f"{data.asset}: no data estimate of {channel!r} with data up to {end}")
    return ([round(float(v), 4) for v in fit.data_beta[ok].mean(axis=0)],
            [round(float(v), 4) for v in fit.data_se[ok].mean(axis=0)])


def format_table(sens: Sensitivities) -> str:
    """The sensitivities as a plain-text table (posterior, data estimate with t-statistic, rows)."""
    lines = [f"{sens.asset} at {pd.Timestamp(sens.origin).date()}"]
    lines.append(f"{'channel':12} {'regressor':15} {'block':>6} {'beta':>8} {'sd':>7} {'data':>8} {'se':>7} "
                 f"{'t':>6} {'rows':>5}")
    for name, fit in sens.fits.items():
        for j, reg in enumerate(fit.channel.regressors):
            for i, block in enumerate(LEAD_BLOCKS):
                d, s = fit.data_beta[i, j], fit.data_se[i, j]
                t = d / s if np.isfinite(d) and s > 0 else math.nan
                lines.append(f"{name:12} {reg:15} {block_label(block):>6} {fit.beta[i, j]:8.3f} {fit.sd[i, j]:7.3f} "
                             f"{d:8.3f} {s:7.3f} {t:6.2f} {int(fit.n_rows[i]):5d}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aetheris_ray.sensitivity --data DIR [--asset BTC-USD] [--as-of DATE] [--derive-prior]``."""
    import argparse

    from aetheris_ray.data.csv_connector import CsvSource

    ap = argparse.ArgumentParser(prog="python -m aetheris_ray.sensitivity", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CSV data directory (like ../shared/data)")
    ap.add_argument("--asset", default="BTC-USD")
    ap.add_argument("--as-of", default=None, help="origin (default: the newest close)")
    ap.add_argument("--derive-prior", action="store_true", help="re-derive the inventory prior (data up to 2021-12-31)")
    ap.add_argument("--direction", action="store_true",
                    help="also the direction diagnostics (drift, downside share of variance; data only)")
    args = ap.parse_args(argv)
    data = CsvSource(args.data).history(args.asset)
    origin = pd.Timestamp(args.as_of) if args.as_of else data.daily_close().dropna().index[-1]
    print(format_table(estimate(data, origin)))
    if args.direction:
        for target in ("drift", "downside"):
            print(f"\ndirection diagnostic: {target}")
            print(format_table(estimate(data, origin, use_prior=False, target=target)))
    if args.derive_prior:
        mean, sd = derive_prior(data)
        print(f"inventory prior from {args.asset} up to {PRIOR_END}: mean {mean}, sd {sd}")
    return 0


__all__ = [
    "CHANNELS", "LEAD_BLOCKS", "MIN_ROWS", "Channel", "ChannelFit", "Sensitivities", "block_label", "combine",
    "derive_prior",
    "estimate", "fit_channel", "format_table", "forward_direction", "forward_log_vol", "hac_ols",
]

if __name__ == "__main__":
    raise SystemExit(main())
