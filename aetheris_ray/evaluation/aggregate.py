"""Mergeable aggregation of per-forecast scores (map-reduce, as gluonts' ``ev/``).

`Sum` and `Mean` accumulate *exactly*: every float is an integer multiple of
``2**-1126`` (the smallest subnormal exponent minus the mantissa bits), so the
running total is kept as a Python integer of that unit.  Stepping, merging and
the order of either never change the result: shards of a backtest (processes
today, Ray tasks later) merge to bitwise the same figures as a single pass, and
``get()`` returns the correctly rounded value of the exact sum.

`MetricSet` holds the backtest's named metrics for one group of forecasts
(model x asset x horizon) and steps them all from realised values and quantile
forecasts.  Metric names:

* ``ql``: quantile loss, (2 / n_levels) x sum of pinball losses;
* ``coverage[0.50]``, ``coverage[0.80]``, ``coverage[0.90]``: central intervals
  (q25-q75, q10-q90, q05-q95), for each interval whose two levels are present;
* ``width[0.80]`` (and the other widths): mean interval width;
* ``hit[0.05]`` ... ``hit[0.95]``: fraction of outcomes below each quantile
  (nominal: the level);
* ``tail_low[0.05]``, ``tail_high[0.95]``: outcomes below the lowest / above
  the highest quantile (the tail misses; nominal: the level / 1 - the level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Mapping, Sequence

import numpy as np

from aetheris_ray._typing import FloatArray
from aetheris_ray.errors import InvalidInput
from aetheris_ray.evaluation import scores

__all__ = ["Sum", "Mean", "MetricSet", "INTERVALS", "metric_names", "merge_all"]

#: Central interval probabilities scored when both of their levels are forecast.
INTERVALS: tuple[float, ...] = (0.50, 0.80, 0.90)

_UNIT_EXP = 1126  # every finite double is k * 2**-1126 for an integer k (53-bit mantissa, exponent >= -1073)
_LOW_BITS = 26
_LOW_MASK = (1 << _LOW_BITS) - 1


def _exact_int_sum(values: np.ndarray) -> int:
    """The exact sum of finite doubles, as an integer count of ``2**-1126``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[v != 0.0]
    if v.size == 0:
        return 0
    mant, exp = np.frexp(v)  # v = mant * 2**exp, 0.5 <= |mant| < 1
    ints = np.ldexp(mant, 53).astype(np.int64)  # exact: mant has 53 significant bits
    order = np.argsort(exp, kind="stable")
    exp_sorted, ints_sorted = exp[order], ints[order]
    starts = np.flatnonzero(np.r_[True, exp_sorted[1:] != exp_sorted[:-1]])
    # split each 53-bit mantissa so that int64 group sums cannot overflow (2**27 * n < 2**63)
    hi = np.add.reduceat(ints_sorted >> _LOW_BITS, starts)
    lo = np.add.reduceat(ints_sorted & _LOW_MASK, starts)
    total = 0
    for e, h, low in zip(exp_sorted[starts].tolist(), hi.tolist(), lo.tolist()):
        total += ((h << _LOW_BITS) + low) << (e - 53 + _UNIT_EXP)
    return total


def _to_float(total: int) -> float:
    return float(Fraction(total, 1 << _UNIT_EXP))


@dataclass
class Sum:
    """Exact, mergeable sum of finite floats.

    >>> a, b = Sum().step([0.1, 0.2]), Sum().step([0.3])
    >>> a.merge(b).get() == Sum().step([0.1, 0.2, 0.3]).get() == 0.6
    True
    """

    _total: int = 0

    def step(self, values: Iterable[float] | FloatArray | float) -> "Sum":
        """Add values (in place; returns ``self``).  Non-finite values are refused."""
        v = np.asarray(values, dtype=np.float64)
        if not np.isfinite(v).all():
            raise InvalidInput(f"Sum.step: {int((~np.isfinite(v)).sum())} non-finite value(s); drop NaN/inf first")
        self._total += _exact_int_sum(v)
        return self

    def merge(self, other: "Sum") -> "Sum":
        """A new accumulator holding both sums (neither input changes)."""
        return Sum(self._total + other._total)

    def get(self) -> float:
        """The sum, correctly rounded to a float."""
        return _to_float(self._total)


@dataclass
class Mean:
    """Exact, mergeable mean: an exact `Sum` and a count.

    >>> m = Mean().step([1.0, 2.0]).merge(Mean().step([3.0, 6.0]))
    >>> m.get(), m.count
    (3.0, 4)
    >>> Mean().get()
    nan
    """

    total: Sum = field(default_factory=Sum)
    count: int = 0

    def step(self, values: Iterable[float] | FloatArray | float) -> "Mean":
        """Add values (in place; returns ``self``).  Non-finite values are refused."""
        v = np.asarray(values, dtype=np.float64).ravel()
        self.total.step(v)
        self.count += int(v.size)
        return self

    def merge(self, other: "Mean") -> "Mean":
        """A new accumulator over both sets of values."""
        return Mean(self.total.merge(other.total), self.count + other.count)

    def get(self) -> float:
        """The mean (NaN when empty): the correctly rounded exact sum / count."""
        if self.count == 0:
            return float("nan")
        return float(Fraction(self.total._total, 1 << _UNIT_EXP) / self.count)


def _fmt(level: float) -> str:
    return f"{level:.2f}" if round(level, 2) == level else f"{level:g}"


def _interval_levels(levels: Sequence[float]) -> dict[float, tuple[int, int]]:
    """Central intervals of `INTERVALS` whose two end levels are among ``levels``: prob -> (i_low, i_high)."""
    lv = [round(float(x), 10) for x in levels]
    out = {}
    for p in INTERVALS:
        lo, hi = round((1 - p) / 2, 10), round((1 + p) / 2, 10)
        if lo in lv and hi in lv:
            out[p] = (lv.index(lo), lv.index(hi))
    return out


def metric_names(levels: Sequence[float]) -> list[str]:
    """The metric names a `MetricSet` over ``levels`` holds, in report order.

    >>> metric_names([0.05, 0.5, 0.95])
    ['ql', 'coverage[0.90]', 'width[0.90]', 'hit[0.05]', 'hit[0.50]', 'hit[0.95]', 'tail_low[0.05]', 'tail_high[0.95]']
    """
    iv = _interval_levels(levels)
    return (
        ["ql"]
        + [f"coverage[{_fmt(p)}]" for p in iv]
        + [f"width[{_fmt(p)}]" for p in iv]
        + [f"hit[{_fmt(q)}]" for q in levels]
        + [f"tail_low[{_fmt(levels[0])}]", f"tail_high[{_fmt(levels[-1])}]"]
    )


@dataclass
class MetricSet:
    """The named `Mean` accumulators of one group of forecasts.

    Parameters
    ----------
    levels : tuple of float
        Quantile levels of the forecasts this set scores (increasing).
    """

    levels: tuple[float, ...]
    means: dict[str, Mean] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.levels = tuple(float(x) for x in self.levels)
        for name in metric_names(self.levels):
            self.means.setdefault(name, Mean())

    @property
    def count(self) -> int:
        """Number of forecasts scored."""
        return self.means["ql"].count

    def step(self, y: FloatArray, q: FloatArray) -> "MetricSet":
        """Score forecasts and add them (in place; returns ``self``).

        Parameters
        ----------
        y : ndarray, shape (n,)
            Realised values (log-returns).
        q : ndarray, shape (n, n_levels)
            Quantile forecasts (log-returns) at ``self.levels``.
        """
        y = np.asarray(y, dtype=float).ravel()
        q = np.asarray(q, dtype=float).reshape(y.size, len(self.levels))
        lv = self.levels
        self.means["ql"].step(scores.pinball_quantile(y, q, lv, nan_policy="raise"))
        for p, (i, j) in _interval_levels(lv).items():
            self.means[f"coverage[{_fmt(p)}]"].step(scores.coverage_interval(y, q[:, i], q[:, j], nan_policy="raise"))
            self.means[f"width[{_fmt(p)}]"].step(scores.width(q[:, i], q[:, j], nan_policy="raise"))
        below = (y[:, None] < q).astype(float)
        for k, level in enumerate(lv):
            self.means[f"hit[{_fmt(level)}]"].step(below[:, k])
        self.means[f"tail_low[{_fmt(lv[0])}]"].step(below[:, 0])
        self.means[f"tail_high[{_fmt(lv[-1])}]"].step((y > q[:, -1]).astype(float))
        return self

    def merge(self, other: "MetricSet") -> "MetricSet":
        """A new set over both groups of forecasts (same levels required)."""
        if other.levels != self.levels:
            raise InvalidInput(f"cannot merge metrics over levels {list(other.levels)} into {list(self.levels)}")
        return MetricSet(self.levels, {k: m.merge(other.means[k]) for k, m in self.means.items()})

    def get(self) -> dict[str, float]:
        """Metric name -> value, plus ``n`` (the number of forecasts)."""
        out: dict[str, float] = {k: m.get() for k, m in self.means.items()}
        out["n"] = float(self.count)
        return out


def merge_all(sets: Iterable[MetricSet], levels: Sequence[float]) -> MetricSet:
    """Merge any number of metric sets (an empty input gives an empty set)."""
    out = MetricSet(tuple(levels))
    for s in sets:
        out = out.merge(s)
    return out


def as_table(groups: Mapping[tuple, MetricSet], keys: Sequence[str]):
    """A DataFrame with one row per group: the key columns, ``n`` and every metric."""
    import pandas as pd

    rows = [{**dict(zip(keys, k)), **ms.get()} for k, ms in groups.items()]
    return pd.DataFrame(rows)
