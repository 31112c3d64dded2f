"""Shared implementation of the model parts: frozen specs, fitted objects, and the batched `Context`.

The contract itself (one protocol per kind, declared needs, shared vs per-origin
state) is in `aetheris_ray.components.contract`; docs/components.md walks through it.

* a **spec** -- a frozen dataclass of hyperparameters (``GarchVolatility(dist="t")``).
  ``spec.fit(returns, **inputs)`` returns a new **fitted** object; fitting never
  mutates the spec.  ``fit_inputs`` declares the inputs it takes.
* a **fitted** part (`FittedBase`) -- per-fit parameters as numpy arrays whose
  leading axis is a *batch* of origins (length 1 for a single forecast; one row per
  origin in a walk-forward), what was learned once in ``shared`` (never batched),
  ``save(dir)`` / ``load(dir)`` (JSON manifest + ``params.npz`` / ``shared.npz``,
  never pickle, atomic, schema version checked) and ``from_params(...)`` (arch's ``fix``).

A `Context` is what parts condition on: the trailing ``lookback`` daily log-returns
of each origin (right-aligned, zero-padded on the left with a validity mask), the
regime vector and label, the market-maker indices and intraday realised variances.
``Context.from_states`` builds it from `MarketState` objects (forecasts and
walk-forwards), ``Context.from_windows`` from training windows: a network's features
are computed from a `Context` only, so it sees the same inputs in training and in use.

Capability flags on every spec and fitted class: ``requires_torch`` (a neural
variant; imports torch lazily) and ``has_analytic_moments`` (offers
``expected_variance``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd

from aetheris_ray._typing import BoolArray, FloatArray
from aetheris_ray.atomic import replace_dir
from aetheris_ray.errors import InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState, regime_codes

__all__ = [
    "SCHEMA_VERSION",
    "MM_KEYS",
    "Context",
    "SpecBase",
    "FittedBase",
    "ewma_filter",
    "load_component",
]

#: Version of the on-disk artefact layout (manifest.json + params.npz).
SCHEMA_VERSION = 1
#: Market-maker indices, in the column order of `Context.mm`.
MM_KEYS = ("gamma_squeeze", "inventory_unwind", "basis_pressure")
#: Floor of every daily variance (log-return units squared).
VAR_FLOOR = 1e-12
#: Length of the sample-variance seed of the EWMA recursions.
EWMA_SEED = 30

F = TypeVar("F", bound="FittedBase")


# -- the batched conditioning input ----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Context:
    """What components condition on, stacked over origins (axis 0).

    Attributes
    ----------
    returns : ndarray, shape (n_origins, lookback), float64
        Past daily log-returns (gap-scaled), oldest first; the last column is the
        return into the origin.  Zero where ``valid`` is False (left padding).
    valid : ndarray, shape (n_origins, lookback), bool
        Which entries of ``returns`` are real observations (a right-aligned block).
    regime_label : tuple of str, length n_origins
    regime_vector : ndarray, shape (n_origins, n_regime_features)
    mm : ndarray, shape (n_origins, 3)
        `MM_KEYS` indices in [-3, 3]; NaN where absent.
    rv : ndarray, shape (n_origins, lookback) or None
        Intraday realised variances aligned with ``returns`` (NaN where absent);
        None when no origin has intraday bars.
    log_hl, log_co : ndarray, shape (n_origins, lookback) or None
        ``ln(high / low)`` and ``ln(close / open)`` of the daily bars aligned with
        ``returns`` (NaN where unobserved or padding); None when no origin has them.
    iv : ndarray, shape (n_origins, lookback) or None
        Implied volatility index (annualised percent) aligned with ``returns`` (NaN
        where absent); None when no origin has one.  An ``iv_level`` scenario sets it.
    market : ndarray, shape (n_origins, lookback) or None
        The market asset's daily ``ln(high / low)`` aligned with ``returns`` (NaN where
        unobserved or padding); None when no origin has it.
    overrides : tuple of dict
        Scenario overrides per origin (empty dicts for unconditional forecasts).
        An ``rv_shock`` multiplier is already applied to ``returns``, ``rv``, ``log_hl`` and ``log_co``
        (observed data that `apply_scenario` leaves untouched), so every component
        that filters past returns sees the shocked volatility.
    """

    returns: FloatArray
    valid: BoolArray
    regime_label: tuple[str, ...]
    regime_vector: FloatArray
    mm: FloatArray
    rv: FloatArray | None = None
    overrides: tuple[dict[str, float], ...] = ()
    log_hl: FloatArray | None = None
    log_co: FloatArray | None = None
    iv: FloatArray | None = None
    market: FloatArray | None = None

    @property
    def size(self) -> int:
        """Number of origins in the batch."""
        return int(self.returns.shape[0])

    @property
    def lookback(self) -> int:
        return int(self.returns.shape[1])

    @property
    def n_obs(self) -> np.ndarray:
        """Valid returns per origin, shape (n_origins,)."""
        return self.valid.sum(axis=1)

    @classmethod
    def from_states(cls, states: Sequence[MarketState], lookback: int = 1000) -> "Context":
        """Stack `MarketState` objects (each with its full return history) into a batch."""
        if not states:
            raise InvalidInput("states: empty; give at least one MarketState")
        n = len(states)
        ret = np.zeros((n, lookback))
        valid = np.zeros((n, lookback), dtype=bool)
        d = max(int(np.size(s.regime_vector)) for s in states)
        rvec = np.zeros((n, d))
        mm = np.full((n, len(MM_KEYS)), np.nan)
        rv = np.full((n, lookback), np.nan) if any(s.intraday_rv is not None for s in states) else None
        has_range = any(s.log_hl is not None for s in states)
        hl = np.full((n, lookback), np.nan) if has_range else None
        co = np.full((n, lookback), np.nan) if has_range else None
        iv = np.full((n, lookback), np.nan) if any(s.implied_vol is not None for s in states) else None
        mk = np.full((n, lookback), np.nan) if any(s.market_log_hl is not None for s in states) else None
        for i, s in enumerate(states):
            # a scenario's realised-vol shock scales the observed returns (aetheris_ray.scenario.vol_multiplier)
            m = float(s.overrides.get("rv_shock", 1.0)) if s.overrides else 1.0
            r = np.asarray(s.returns, dtype=float)[-lookback:] * m
            r = np.where(np.isfinite(r), r, 0.0)
            k = r.size
            if k:
                ret[i, lookback - k:] = r
                valid[i, lookback - k:] = True
            v = np.asarray(s.regime_vector, dtype=float).ravel()
            rvec[i, : v.size] = np.where(np.isfinite(v), v, 0.0)
            for j, key in enumerate(MM_KEYS):
                x = s.mm_indices.get(key) if s.mm_indices else None
                if x is not None and np.isfinite(x):
                    mm[i, j] = float(x)
            if rv is not None and s.intraday_rv is not None:
                x = np.asarray(s.intraday_rv, dtype=float)[-lookback:] * m * m
                rv[i, lookback - x.size:] = np.where(np.isfinite(x) & (x >= 0), x, np.nan)
            if hl is not None and s.log_hl is not None and k:
                hl[i, lookback - k:] = np.asarray(s.log_hl, dtype=float)[-k:] * m
                co[i, lookback - k:] = np.asarray(s.log_co, dtype=float)[-k:] * m
            if iv is not None and s.implied_vol is not None and k:
                iv[i, lookback - k:] = np.asarray(s.implied_vol, dtype=float)[-k:]
                if s.overrides and "iv_level" in s.overrides:  # the scenario's implied vol at the origin
                    iv[i, -1] = float(s.overrides["iv_level"])
            if mk is not None and s.market_log_hl is not None and k:
                mk[i, lookback - k:] = np.asarray(s.market_log_hl, dtype=float)[-k:]
        labels = tuple(str(s.regime_label) for s in states)
        overrides = tuple(dict(s.overrides) for s in states)
        return cls(ret, valid, labels, rvec, mm, rv, overrides, hl, co, iv, mk)

    @classmethod
    def from_windows(cls, windows: Mapping[str, np.ndarray]) -> "Context":
        """A context per training window (`aetheris_ray.windows`): the window's raw returns (all valid),
        its 2h-bar realised variances (NaN on days without them), regime vector (zeros when absent) and,
        on the days without 2h bars, the daily range ``ln(high/low)`` recovered from the window's Parkinson
        log vol (``log_hl``; NaN on 2h-bar days; ``log_co`` is not in the windows: all NaN)."""
        x = np.asarray(windows["x_ret"], dtype=float)
        ret = x * np.asarray(windows["sigma"], dtype=float)[:, None] + np.asarray(windows["mu"], dtype=float)[:, None]
        n, lb = ret.shape
        has_rv = windows.get("x_has_rv")
        logvol = np.asarray(windows["x_logvol"], dtype=float)
        rv = None
        if has_rv is not None and np.any(has_rv):
            rv = np.where(np.asarray(has_rv, dtype=bool), np.exp(2.0 * logvol), np.nan)
        rv_days = np.zeros((n, lb), dtype=bool) if has_rv is None else np.asarray(has_rv, dtype=bool)
        hl = np.where(rv_days, np.nan, np.sqrt(4.0 * np.log(2.0)) * np.exp(logvol))  # Parkinson: ln(H/L)^2 / (4 ln 2)
        reg = windows.get("regime")
        rvec = np.zeros((n, 1)) if reg is None else np.where(np.isfinite(reg), np.asarray(reg, dtype=float), 0.0)
        label = ("normal",) * n
        return cls(ret, np.ones((n, lb), dtype=bool), label, rvec, np.full((n, len(MM_KEYS)), np.nan), rv, (), hl,
                   np.full((n, lb), np.nan))

    @classmethod
    def from_returns(cls, returns: FloatArray, lookback: int = 1000, regime_label: str = "normal") -> "Context":
        """A one-origin context from bare returns (neutral regime, no MM indices): tests and tools."""
        r = np.asarray(returns, dtype=float).ravel()
        sigma = float(np.std(r)) if r.size else 0.0
        state = MarketState(asset="?", origin=pd.Timestamp(0), spot=1.0, returns=r, mu=0.0, sigma=sigma,
                            regime_label=regime_label, regime_vector=np.zeros(1))
        return cls.from_states([state], lookback)

    def take(self, idx: Any) -> "Context":
        """The sub-batch of origins ``idx`` (an index array or slice)."""
        sel = np.arange(self.size)[idx]
        return Context(
            self.returns[sel], self.valid[sel], tuple(self.regime_label[i] for i in sel), self.regime_vector[sel],
            self.mm[sel], None if self.rv is None else self.rv[sel],
            tuple(self.overrides[i] for i in sel) if self.overrides else (),
            None if self.log_hl is None else self.log_hl[sel], None if self.log_co is None else self.log_co[sel],
            None if self.iv is None else self.iv[sel], None if self.market is None else self.market[sel],
        )

    def regime_codes(self) -> np.ndarray:
        """Regime labels as integers (`aetheris_ray.features.state.regime_codes`: unknown labels raise)."""
        return regime_codes(self.regime_label)


def ewma_filter(ctx_returns: FloatArray, valid: BoolArray, lam: float) -> FloatArray:
    """RiskMetrics EWMA variance forecasts along each row.

    ``v[:, t]`` is the variance forecast for the day after ``returns[:, t]``:
    ``v[t] = lam v[t-1] + (1 - lam) r[t]^2``, seeded with the mean square of the
    first `EWMA_SEED` valid returns (padding keeps the seed value).

    Parameters
    ----------
    ctx_returns, valid : ndarray, shape (n, L)

    Returns
    -------
    ndarray, shape (n, L), float64, floored at `VAR_FLOOR`.

    >>> r = np.array([[0.0, 0.01, -0.02]]); v = np.array([[False, True, True]])
    >>> ewma_filter(r, v, 0.5).round(7).tolist()  # seed (1e-4 + 4e-4) / 2 held over the padding
    [[0.00025, 0.000175, 0.0002875]]
    """
    from scipy import signal

    r2 = np.square(ctx_returns)
    v0 = seed_variance(r2, valid)
    x = np.where(valid, r2, v0[:, None])
    out, _ = signal.lfilter([1.0 - lam], [1.0, -lam], x, axis=1, zi=(lam * v0)[:, None])
    return np.maximum(out, VAR_FLOOR)


def seed_variance(r2: FloatArray, valid: BoolArray) -> FloatArray:
    """Mean square of the first `EWMA_SEED` valid returns per row (floored), shape (n,)."""
    rank = np.cumsum(valid, axis=1)
    first = valid & (rank <= EWMA_SEED)
    cnt = first.sum(axis=1)
    s = np.where(first, r2, 0.0).sum(axis=1)
    return np.maximum(s / np.maximum(cnt, 1), VAR_FLOOR)


# -- shared implementation ---------------------------------------------------------------------


@dataclass(frozen=True)
class SpecBase:
    """Base of the frozen specs: name/kind flags, (de)serialisation, validation helpers."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    requires_torch: ClassVar[bool] = False
    has_analytic_moments: ClassVar[bool] = False
    #: Keyword inputs ``fit`` takes from the composer (`contract.FIT_INPUTS` or another kind's name).
    fit_inputs: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **hyperparameters}`` (nested specs as dicts), JSON-ready."""
        out: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def _check(self, cond: bool, what: str) -> None:
        if not cond:
            raise InvalidInput(f"{self.kind} {self.name!r}: {what}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, SpecBase):
        return x.to_dict()
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclass(frozen=True, eq=False)
class FittedBase:
    """Base of fitted components: batched parameter arrays, save/load, take/stack.

    Attributes
    ----------
    spec : SpecBase
        The hyperparameters it was fitted with.
    params : mapping str -> ndarray
        Every array has the batch (origin) axis first.
    info : dict
        JSON-ready metadata (training range, fallbacks taken, warnings).
    children : tuple of FittedBase
        Nested components (a volatility blend's members, a composed path model's parts).
    shared : mapping str -> ndarray
        What was learned once and does not vary by origin (network weights): held
        once, never stacked or taken along the batch axis.
    """

    spec: Any
    params: Mapping[str, np.ndarray]
    info: Mapping[str, Any] = field(default_factory=dict)
    children: tuple["FittedBase", ...] = ()
    shared: Mapping[str, np.ndarray] = field(default_factory=dict)

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    requires_torch: ClassVar[bool] = False
    has_analytic_moments: ClassVar[bool] = False
    #: Parameter names and their trailing shapes' meaning (documentation and from_params).
    param_names: ClassVar[tuple[str, ...]] = ()
    #: Parameters that are vectors per origin (a 1-d value given to `from_params` is one row).
    row_params: ClassVar[tuple[str, ...]] = ()

    @property
    def needs(self) -> Mapping[str, str]:
        """What ``condition`` takes from other parts: ``{"arg": "kind.verb"}`` (`contract`); none by default."""
        return {}

    # -- batch handling -------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        for v in self.params.values():
            return int(np.shape(v)[0])
        for c in self.children:
            return c.batch_size
        return 1

    def p(self, key: str) -> np.ndarray:
        """A parameter shaped ``(batch, 1)`` (for broadcasting against paths), or ``(batch, k)``."""
        v = np.asarray(self.params[key], dtype=float)
        return v[:, None] if v.ndim == 1 else v

    def take(self: F, idx: Any) -> F:
        """The sub-batch ``idx`` (rows of every parameter; children likewise)."""
        return dataclasses.replace(
            self,
            params={k: np.asarray(v)[idx] for k, v in self.params.items()},
            children=tuple(c.take(idx) for c in self.children),
        )

    @classmethod
    def stack(cls: type[F], fits: Sequence[F]) -> F:
        """Concatenate fitted objects of the same spec along the batch axis (``shared`` must be the same)."""
        if not fits:
            raise InvalidInput(f"{cls.name}: nothing to stack")
        first = fits[0]
        if any(f.shared is not first.shared and not _same_arrays(f.shared, first.shared) for f in fits[1:]):
            raise InvalidInput(f"{cls.kind} {cls.name!r}: cannot stack fits with different shared weights")
        params = {k: np.concatenate([np.asarray(f.params[k]) for f in fits], axis=0) for k in first.params}
        children = tuple(type(c).stack([f.children[i] for f in fits]) for i, c in enumerate(first.children))
        return dataclasses.replace(first, params=params, children=children)

    @classmethod
    def from_params(cls: type[F], spec: Any = None, **params: Any) -> F:
        """Build a fitted object from given parameters (arch's ``fix``); scalars become batch 1."""
        if spec is None:
            from aetheris_ray.components.registry import spec_class

            spec = spec_class(cls.kind, cls.name)()
        missing = [k for k in cls.param_names if k not in params]
        if missing:
            raise InvalidInput(f"{cls.kind} {cls.name!r}.from_params: missing {missing}; give {list(cls.param_names)}")
        arrs = {}
        for k, v in params.items():
            a = np.asarray(v, dtype=float)
            if a.ndim == 0:
                a = a.reshape(1)
            elif k in cls.row_params and a.ndim == 1:
                a = a.reshape(1, -1)
            arrs[k] = a
        return cls(spec=spec, params=arrs)

    def check_loaded(self) -> None:
        """Raise `ModelNotFound` when loaded arrays cannot be used (shape checks); nothing by default."""

    def check_artefact(self, required: Sequence[str], build: Any, what: str = "the network") -> None:
        """`check_loaded` of a part with trained weights: every ``required`` shared array present, ``build()`` works.

        A missing key, or any error while ``build()`` puts the weights in place (a shape or
        key mismatch, a covariance that is not positive definite), means a corrupt artefact:
        `ModelNotFound` naming the part and the cause.
        """
        missing = [k for k in required if k not in self.shared]
        if missing:
            raise ModelNotFound(f"{self.name} artefact: missing {missing}; the artefact is corrupt")
        try:
            build()
        except Exception as e:  # noqa: BLE001 - every failure to build from the weights means "corrupt"
            raise ModelNotFound(f"{self.name} artefact: cannot build {what} ({type(e).__name__}: {e}); "
                                "the artefact is corrupt") from None

    # -- the single-state verb --------------------------------------------------------------
    def condition(self, ctx: Context) -> dict[str, np.ndarray]:  # pragma: no cover - overridden
        raise NotImplementedError

    def sample(self, state: MarketState, n_paths: int, horizon: int, rng: np.random.Generator,
               lookback: int = 1000) -> FloatArray:
        """The component's own paths for one state, shape (n_paths, horizon).

        Trend: drift per day; volatility: ``sigma_t * N(0, 1)`` log-returns;
        jumps: jump log-returns; residuals: standardised innovations.
        """
        if self.batch_size != 1:
            raise InvalidInput(f"{self.kind} {self.name!r}: sample() needs a batch-1 fit, "
                               f"this one has {self.batch_size}; use take([i]) first")
        ctx = Context.from_states([state], lookback)
        return np.asarray(self.simulate(self.condition(ctx), int(n_paths), int(horizon), rng))[0]

    def simulate(self, cond: dict[str, np.ndarray], n_paths: int, horizon: int,
                 rng: np.random.Generator) -> FloatArray:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- persistence --------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        from aetheris_ray import __version__

        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "name": self.name,
            "package_version": __version__,
            "spec": self.spec.to_dict() if hasattr(self.spec, "to_dict") else {},
            "params": sorted(self.params),
            "shared": sorted(self.shared),
            "info": _jsonable_info(self.info),
            "children": len(self.children),
        }

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write ``manifest.json`` + ``params.npz`` (+ ``child_<i>/``) atomically; refuse to overwrite unless asked."""
        target = Path(directory)
        with replace_dir(target, overwrite=overwrite, what="save") as tmp:
            self._write(tmp)
        return target

    def _write(self, d: Path) -> None:
        np.savez(d / "params.npz", **{k: np.asarray(v) for k, v in self.params.items()})
        if self.shared:
            np.savez(d / "shared.npz", **{k: np.asarray(v) for k, v in self.shared.items()})
        for i, c in enumerate(self.children):
            (d / f"child_{i}").mkdir()
            c._write(d / f"child_{i}")
        (d / "manifest.json").write_text(json.dumps(self.manifest(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> "FittedBase":
        """Read a saved component; checks the schema version, kind and name."""
        obj = load_component(directory)
        if not isinstance(obj, cls):
            raise ModelNotFound(f"{directory}: holds a {obj.kind} {obj.name!r}, not a {cls.kind} {cls.name!r}")
        return obj


def _same_arrays(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _jsonable_info(info: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[str(k)] = v
    return out


def load_component(directory: str | Path) -> FittedBase:
    """Load any saved component: the manifest names its kind and registry name."""
    from aetheris_ray.components.registry import fitted_class, spec_from_dict

    d = Path(directory)
    mf = d / "manifest.json"
    if not mf.is_file():
        raise ModelNotFound(f"{d}: no manifest.json; not a saved component directory")
    try:
        man = json.loads(mf.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelNotFound(f"{mf}: not valid JSON ({e}); the artefact is corrupt") from None
    version = man.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelNotFound(
            f"{d}: artefact schema version {version!r}, this package reads version {SCHEMA_VERSION}; "
            "refit and save it again"
        )
    try:
        kind, name = man["kind"], man["name"]
        fcls = fitted_class(kind, name)
        spec = spec_from_dict(kind, man.get("spec", {"name": name}))
        with np.load(d / "params.npz", allow_pickle=False) as z:
            params = {k: np.asarray(z[k]) for k in z.files}
        shared: dict[str, np.ndarray] = {}
        if man.get("shared"):
            with np.load(d / "shared.npz", allow_pickle=False) as z:
                shared = {k: np.asarray(z[k]) for k in z.files}
    except (KeyError, TypeError, ValueError, OSError, EOFError) as e:
        raise ModelNotFound(f"{d}: cannot read the artefact ({type(e).__name__}: {e}); it is corrupt") from None
    if sorted(shared) != sorted(man.get("shared") or []):
        raise ModelNotFound(f"{d}: shared.npz holds {sorted(shared)}, the manifest lists {man['shared']}; it is corrupt")
    children = tuple(load_component(d / f"child_{i}") for i in range(int(man.get("children", 0))))
    obj = fcls(spec=spec, params=params, info=man.get("info", {}), children=children, shared=shared)
    obj.check_loaded()
    return obj
