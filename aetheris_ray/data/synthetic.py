"""A seeded synthetic market with the stylised facts of crypto prices.

The generator (all randomness from one ``np.random.Generator`` seeded by
``SeedSequence(seed)``; same seed -> identical frames):

* a market-wide Markov regime ``s_t`` in calm / normal / volatile / crisis,
  scaling volatility by `REGIME_VOL`;
* per-asset GARCH(1, 1) variance ``h_t = omega + alpha z_{t-1}^2 + beta h_{t-1}``
  (unit unconditional mean), so volatility clusters;
* multivariate Student-t shocks (`DF` degrees of freedom, equicorrelation
  `CORRELATION`, shared chi-square mixing so crashes are joint);
* rare jumps, per asset and market-wide;
* 12 two-hour sub-steps per day (a Brownian bridge that sums to the daily
  log-return) giving consistent OHLC: daily high/low are the extremes of the
  2h bars, open = previous close;
* for the first asset: 2h bars and the side series ``funding`` (fraction/day),
  ``implied_vol`` (percent/year) and ``basis`` (fraction of spot), starting a
  quarter of the way into the span, as real side series start years after
  the price history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from aetheris_ray.data.schema import (
    BAR_COLUMNS,
    MARKET_ASSETS,
    AssetData,
    SeriesInfo,
    bar_ts_from_dates,
    copy_frames,
    series_ts_from_dates,
    with_market_range,
)
from aetheris_ray.data.validation import resolve_cutoff, unknown_asset
from aetheris_ray.errors import InvalidInput

#: Volatility multiplier of each regime (calm, normal, volatile, crisis).
REGIME_VOL = (0.45, 1.0, 2.2, 3.5)
#: Daily regime transition matrix (rows: from, columns: to).
TRANSITIONS = np.array(
    [
        [0.990, 0.010, 0.000, 0.000],
        [0.006, 0.988, 0.006, 0.000],
        [0.000, 0.012, 0.980, 0.008],
        [0.000, 0.000, 0.030, 0.970],
    ]
)
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90
#: Cap of the GARCH variance multiplier (daily vol at most 2x its regime level).
H_MAX = 4.0
#: Daily log-return drift.
DRIFT = 0.0003
DF = 10.0
CORRELATION = 0.65
#: Daily probability of an asset's own jump and of a market-wide jump.
JUMP_PROB, MARKET_JUMP_PROB = 0.002, 0.001
#: Jump size standard deviation, in units of the asset's base daily volatility.
JUMP_SIZE = 2.0
STEPS_PER_DAY = 12  # 2h sub-steps


@dataclass(frozen=True)
class Profile:
    """Price at the start (quote currency), daily log-return vol in the normal regime, daily volume (base units)."""

    price: float
    vol: float
    volume: float


PROFILES = {
    "SYN-BTC": Profile(14000.0, 0.030, 30_000.0),
    "SYN-ETH": Profile(750.0, 0.038, 400_000.0),
    "SYN-ALT": Profile(0.35, 0.050, 50_000_000.0),
}
DEFAULT_PROFILE = Profile(100.0, 0.040, 1_000_000.0)


class SyntheticSource:
    """Seeded synthetic market implementing `MarketSource`.

    Parameters
    ----------
    seed : int
        Seed of the generator (>= 0).
    assets : sequence of str
        Asset names; the first one also gets 2h bars and side series.  Known
        names take their level/volatility from `PROFILES`, others `DEFAULT_PROFILE`.
    start, end : str or Timestamp
        First and last daily bar dates (inclusive), at least 30 days apart.

    Examples
    --------
    >>> src = SyntheticSource(seed=1, start="2024-01-01", end="2024-03-31")
    >>> data = src.history("SYN-BTC", until="2024-02-01")
    >>> str(data.bars["1D"]["ts"].iloc[-1])
    '2024-02-01 22:00:00+00:00'
    """

    def __init__(
        self,
        seed: int = 0,
        assets: tuple[str, ...] | list[str] = ("SYN-BTC", "SYN-ETH", "SYN-ALT"),
        start: str | pd.Timestamp = "2018-01-01",
        end: str | pd.Timestamp = "2024-12-31",
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidInput(f"seed={seed!r}: expected an integer >= 0")
        names = tuple(assets)
        if not names or len(set(names)) != len(names) or not all(isinstance(a, str) and a for a in names):
            raise InvalidInput(f"assets={assets!r}: expected one or more distinct non-empty names")
        try:
            first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"start={start!r}, end={end!r}: expected dates such as '2018-01-01'") from exc
        if (last - first).days < 30:
            raise InvalidInput(f"start={start!r}, end={end!r}: the span must be at least 30 days")
        self.seed, self.names, self.start, self.end = int(seed), names, first, last
        self._data: dict[str, AssetData] | None = None

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed}, assets={self.names!r})"

    def assets(self) -> list[str]:
        """The synthetic asset names, sorted."""
        return sorted(self.names)

    def history(self, asset: str, until: pd.Timestamp | str | None = None) -> AssetData:
        """All data of ``asset`` known at ``cutoff_for(until)`` (everything when None)."""
        cutoff = resolve_cutoff(until)
        if asset not in self.names:
            raise unknown_asset(asset, self.names, repr(self))
        if self._data is None:
            self._data = simulate(self.seed, self.names, self.start, self.end)
        market = next((a for a in MARKET_ASSETS if a in self._data), None)
        daily = None if market is None else self._data[market].bars["1D"]
        data = copy_frames(with_market_range(self._data[asset], daily, market))
        return data if cutoff is None else data.until(cutoff)


def simulate(seed: int, names: tuple[str, ...], start: pd.Timestamp, end: pd.Timestamp) -> dict[str, AssetData]:
    """Generate the whole market (see the module docstring for the model).

    Returns
    -------
    dict asset -> AssetData
        Daily bars for every asset; 2h bars and side series for ``names[0]``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    dates = pd.date_range(start, end, freq="D")
    n_days, n_assets = len(dates), len(names)
    profiles = [PROFILES.get(a, DEFAULT_PROFILE) for a in names]
    base_vol = np.array([p.vol for p in profiles])

    regime = _regimes(rng, n_days)
    mult = np.asarray(REGIME_VOL)[regime]
    corr = np.full((n_assets, n_assets), CORRELATION) + (1 - CORRELATION) * np.eye(n_assets)
    normal = rng.standard_normal((n_days, n_assets)) @ np.linalg.cholesky(corr).T
    mixing = np.sqrt(rng.chisquare(DF, size=(n_days, 1)) / (DF - 2))
    z = normal / mixing  # unit-variance Student-t, tail-dependent across assets
    h = _garch(z)
    sigma = base_vol * mult[:, None] * np.sqrt(h)
    jumps = (rng.random((n_days, n_assets)) < JUMP_PROB) * rng.normal(-0.01, JUMP_SIZE * base_vol, (n_days, n_assets))
    market = (rng.random((n_days, 1)) < MARKET_JUMP_PROB) * rng.normal(-0.02, JUMP_SIZE * base_vol.mean(), (n_days, 1))
    returns = DRIFT + sigma * z + jumps + market

    # 2h sub-steps: a Brownian bridge per day that adds up to the daily return.
    steps = rng.standard_normal((n_days, n_assets, STEPS_PER_DAY)) * (sigma / np.sqrt(STEPS_PER_DAY))[..., None]
    steps += (returns[..., None] - steps.sum(axis=-1, keepdims=True)) / STEPS_PER_DAY
    start_price = np.array([p.price for p in profiles])
    path = np.cumsum(steps.transpose(0, 2, 1).reshape(n_days * STEPS_PER_DAY, n_assets), axis=0)
    log_close = (np.log(start_price) + path).reshape(n_days, STEPS_PER_DAY, n_assets).transpose(0, 2, 1)
    log_open = np.empty_like(log_close)  # (day, asset, step)
    log_open[..., 1:] = log_close[..., :-1]
    log_open[0, :, 0] = np.log(start_price)
    log_open[1:, :, 0] = log_close[:-1, :, -1]
    wiggle = np.abs(rng.standard_normal((2, n_days, n_assets, STEPS_PER_DAY))) * (
        0.3 * sigma / np.sqrt(STEPS_PER_DAY)
    )[..., None]
    log_high = np.maximum(log_open, log_close) + wiggle[0]
    log_low = np.minimum(log_open, log_close) - wiggle[1]
    activity = np.exp(0.6 * np.abs(z) + 0.3 * rng.standard_normal((n_days, n_assets))) * mult[:, None]
    share = rng.dirichlet(np.full(STEPS_PER_DAY, 4.0), size=(n_days, n_assets))
    volume = np.array([p.volume for p in profiles]) * activity
    step_volume = volume[..., None] * share

    ts = bar_ts_from_dates(dates)
    out: dict[str, AssetData] = {}
    for i, name in enumerate(names):
        daily = pd.DataFrame(
            {
                "ts": ts,
                "open": np.exp(log_open[:, i, 0]),
                "high": np.exp(log_high[:, i].max(axis=-1)),
                "low": np.exp(log_low[:, i].min(axis=-1)),
                "close": np.exp(log_close[:, i, -1]),
                "volume": step_volume[:, i].sum(axis=-1),
            }
        )
        bars = {"1D": daily}
        series: dict[str, pd.DataFrame] = {}
        info: dict[str, SeriesInfo] = {}
        if i == 0:
            bars["2h"] = _intraday(dates, log_open[:, i], log_high[:, i], log_low[:, i], log_close[:, i], step_volume[:, i])
            series, info = _side_series(rng, dates, returns[:, i], base_vol[i] * mult * np.sqrt(_next_h(h[:, i], z[:, i])))
        out[name] = AssetData(name, bars, series, info)
    return out


def _regimes(rng: np.random.Generator, n_days: int) -> np.ndarray:
    """Markov chain of regime indices, shape (n_days,), starting in "normal"."""
    cum = np.cumsum(TRANSITIONS, axis=1)
    u = rng.random(n_days)
    state = np.empty(n_days, dtype=np.int64)
    s = 1
    for t in range(n_days):
        state[t] = s
        s = min(int(np.searchsorted(cum[s], u[t], side="right")), len(REGIME_VOL) - 1)
    return state


def _garch(z: np.ndarray) -> np.ndarray:
    """GARCH(1, 1) variance multipliers, shape like ``z`` (n_days, n_assets), unit unconditional mean."""
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    h = np.empty_like(z)
    h[0] = 1.0
    for t in range(1, len(z)):
        h[t] = np.minimum(omega + (GARCH_ALPHA * z[t - 1] ** 2 + GARCH_BETA) * h[t - 1], H_MAX)
    return h


def _next_h(h: np.ndarray, z: np.ndarray) -> np.ndarray:
    """One-step-ahead GARCH variance known at each day's close, shape (n_days,)."""
    return np.minimum(1.0 - GARCH_ALPHA - GARCH_BETA + (GARCH_ALPHA * z**2 + GARCH_BETA) * h, H_MAX)


def _intraday(
    dates: pd.DatetimeIndex, lo_open: np.ndarray, lo_high: np.ndarray, lo_low: np.ndarray, lo_close: np.ndarray,
    volume: np.ndarray,
) -> pd.DataFrame:
    """2h bars from (day, step) log-price arrays; bar k of day D closes at ``D-1 22:00 + 2h (k+1)``.

    The last bar of day D closes at ``D 22:00``, the daily close.
    """
    first_close = series_ts_from_dates(dates).asi8 - pd.Timedelta(days=1).value  # D 00:00 = D-1 22:00 + 2h
    step = pd.Timedelta(hours=24 // STEPS_PER_DAY).value
    ts = (first_close[:, None] + step * np.arange(STEPS_PER_DAY)[None, :]).ravel()
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(ts, unit="ns", utc=True),
            "open": np.exp(lo_open.ravel()),
            "high": np.exp(lo_high.ravel()),
            "low": np.exp(lo_low.ravel()),
            "close": np.exp(lo_close.ravel()),
            "volume": volume.ravel(),
        }
    )
    return frame.loc[:, list(BAR_COLUMNS)]


def _side_series(
    rng: np.random.Generator, dates: pd.DatetimeIndex, returns: np.ndarray, next_sigma: np.ndarray
) -> tuple[dict[str, pd.DataFrame], dict[str, SeriesInfo]]:
    """Funding, implied vol and basis of the first asset, dated like real daily side series."""
    n = len(dates)
    start = n // 4
    funding = np.empty(n)
    level, f = 0.0003, 0.0003
    noise = rng.normal(0.0, 0.00015, n)
    momentum = np.convolve(returns, np.ones(7) / 7, mode="full")[:n]
    for t in range(n):
        f = level + 0.85 * (f - level) + 0.004 * momentum[t] + noise[t]
        funding[t] = f
    implied = 100 * np.sqrt(365) * next_sigma * 1.1 * np.exp(rng.normal(0.0, 0.05, n))
    basis = 0.0002 + 0.6 * funding + rng.normal(0.0, 0.0004, n)
    ts = series_ts_from_dates(dates[start:])
    frames = {
        "funding": pd.DataFrame({"ts": ts, "value": funding[start:]}),
        "implied_vol": pd.DataFrame({"ts": ts, "value": implied[start:]}),
        "basis": pd.DataFrame({"ts": ts, "value": basis[start:]}),
    }
    info = {
        "funding": SeriesInfo("funding", "fraction/day", "1D", "synthetic"),
        "implied_vol": SeriesInfo("implied_vol", "percent/year", "1D", "synthetic"),
        "basis": SeriesInfo("basis", "fraction of spot", "1D", "synthetic"),
    }
    return frames, info
