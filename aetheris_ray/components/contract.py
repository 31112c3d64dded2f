"""The model contract: one protocol per kind of part, and how parts declare what they need.

docs/components.md walks through it with a complete example variant.  The engine
calls only the verbs declared here and never names a variant.

Two objects per variant (STYLE.md 5): a frozen **spec** (hyperparameters) whose
``fit(...)`` returns a new **fitted** part.  Shapes: ``n`` origins (the batch axis
of every per-origin array), ``m`` paths, ``h`` steps; log-return units throughout.

Declared needs
--------------
A part says what it needs and the composer (`aetheris_ray.model`) wires it; nothing
is decided by ``if`` statements on variant names:

* ``spec.fit_inputs`` -- keyword arguments its ``fit(returns, **inputs)`` takes, from
  `FIT_INPUTS` (``warm``: the same part's anchor fit for warm starts; ``rv``:
  intraday realised variances known at the fit day; ``ranges``: ``(log_hl, log_co)``, the
  daily bars' ``ln(high/low)`` and ``ln(close/open)`` aligned with the returns; ``iv``: the
  implied-vol index known at each day (annualised percent, aligned); ``market``: the market asset's
  daily ``ln(high/low)`` of each day (aligned; the market volatility factor); ``features``: regime vector +
  MM indices per past day; ``artefact``: the part's trained artefact from the model
  registry, see below) or the name of another kind (that part, already fitted:
  residuals standardised by the volatility part take ``volatility``).  Parts are
  fitted in the order these declarations require.
* ``fitted.needs`` -- keyword arguments its ``condition(ctx, **needs)`` takes, as
  ``{"arg": "kind.verb"}``: the composer passes ``parts[kind].verb(ctx)``.  Filtered
  historical simulation declares ``{"variance": "volatility.filter"}``.
* artefact variants (`registry.Variant.artefact`) declare ``artefact``: the engine
  resolves the registered version once per model (`aetheris_ray.model.resolve_config`)
  and the composer passes the loaded artefact as ``fit(returns, artefact=...)``;
  ``fit`` never reads the registry.

Shared and per-origin state
---------------------------
A fitted part holds what it learned once (``shared``: network weights, a
``state_dict`` as arrays) and per-fit parameters with the batch axis first
(``params``); ``take`` / ``stack`` move only the latter.  Per-origin conditioning
comes from ``condition(ctx)`` and is never stored in the part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from aetheris_ray._typing import FloatArray

__all__ = [
    "FIT_INPUTS", "Cond", "Part", "Trend", "Volatility", "Jumps", "Residuals", "PathModel", "CalibratorPart",
    "MarketStatePart", "Explainer", "Trainer", "PROTOCOLS", "needed_inputs",
]

#: Inputs the composer can give a ``fit`` besides the returns (and any other kind's fitted part).
FIT_INPUTS = ("warm", "rv", "ranges", "iv", "market", "features", "artefact")

#: Per-origin conditioning arrays of a part (batch axis first); opaque to the engine.
Cond = Mapping[str, Any]


@runtime_checkable
class Part(Protocol):
    """What every fitted model part offers (trend, volatility, jumps, residuals, paths)."""

    kind: ClassVar[str]
    name: ClassVar[str]
    requires_torch: ClassVar[bool]

    @property
    def batch_size(self) -> int: ...

    @property
    def needs(self) -> Mapping[str, str]: ...

    def condition(self, ctx: Any, **needs: Any) -> Cond:
        """Per-origin conditioning from a `Context` batch (``needs`` as declared)."""
        ...

    def take(self, idx: Any) -> "Part": ...

    def save(self, directory: str | Path, overwrite: bool = False) -> Path: ...


@runtime_checkable
class Trend(Part, Protocol):
    def drift(self, cond: Cond, horizon: int) -> FloatArray:
        """Expected daily log-return per step, shape (n, 1, h)."""
        ...


@runtime_checkable
class Volatility(Part, Protocol):
    def filter(self, ctx: Any) -> FloatArray:
        """One-step variance forecasts along the context, shape (n, lookback)."""
        ...

    def sample_vol(self, cond: Cond, z: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Daily volatility paths (n, m, h) driven by the innovations ``z`` (n, m, h) (feedback included)."""
        ...


@runtime_checkable
class Jumps(Part, Protocol):
    def add_jumps(self, out: FloatArray, cond: Cond, rng: np.random.Generator) -> None:
        """Add jump log-returns to ``out`` (n, m, h) in place (a no-jump variant adds nothing)."""
        ...


@runtime_checkable
class Residuals(Part, Protocol):
    def draw(self, cond: Cond, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Standardised innovations, shape (n, m, h)."""
        ...

    def draw_tilted(self, cond: Cond, n_paths: int, horizon: int, eta: FloatArray,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Innovations under the exponential tilt ``eta`` (n, h) and each path's log likelihood ratio (n, m)."""
        ...


@runtime_checkable
class PathModel(Part, Protocol):
    """A whole-path generator (kind ``paths``): draws complete daily log-return paths itself."""

    #: The other kinds it is built from (``composed``: the four parts; a jump SDE: none).
    parts: ClassVar[tuple[str, ...]]

    def simulate(self, cond: Cond, n_paths: int, horizon: int, rng: np.random.Generator) -> FloatArray:
        """Daily log-return paths, shape (n, m, h), float64."""
        ...

    def simulate_tilted(self, cond: Cond, n_paths: int, horizon: int, eta: FloatArray,
                        rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """`simulate` under the innovation tilt ``eta`` (importance sampling) and the log likelihood ratios (n, m)."""
        ...

    def drift(self, cond: Cond, horizon: int) -> FloatArray:
        """The paths' centre per step (n, 1, h): what a scenario's step scaling scales deviations from."""
        ...

    @property
    def tiltable(self) -> bool:
        """Whether `simulate_tilted` works (else far thresholds are plain Monte Carlo)."""
        ...

    def tilt_profile(self, cond: Cond, horizon: int) -> tuple[float, FloatArray]:
        """``(sum of the daily drift, expected daily vol (h,))`` of origin 0: where importance sampling tilts."""
        ...


@runtime_checkable
class CalibratorPart(Protocol):
    """Kind ``calibrator``: maps raw probability levels to calibrated ones from realised pairs.

    ``calibrator_class(config, asset, model_version)`` builds an empty one; pairs
    ``(origin day, horizon, regime code, raw PIT)`` are added as they are realised.
    """

    def add(self, origin_day: Any, horizon: Any, regime: Any, raw_pit: Any, cal_pit: Any = None) -> None: ...

    def with_pairs(self, origin_day: Any, horizon: Any, regime: Any, raw_pit: Any, cal_pit: Any) -> Any: ...

    def assign_calibrated(self, origin_day: int, horizon: int, cal_pit: float) -> None: ...

    def level_map(self, regime: Any, as_of: Any, buckets: Sequence[int] | None = None,
                  known_by: int | None = None, version: str | None = None) -> Any:
        """A level map (``raw_levels``, ``calibrated_prob``, ``version``) for one origin."""
        ...

    def coverage(self, as_of: Any, buckets: Sequence[int] | None = None, known_by: int | None = None) -> dict: ...

    def save(self, path: str | Path) -> Path: ...

    def __len__(self) -> int: ...


@runtime_checkable
class MarketStatePart(Protocol):
    """Kind ``market_state``: the regime inputs, label and MM indices at origins, point in time."""

    def compute_state(self, data: Any, origin: Any) -> Any: ...

    def compute_states(self, data: Any, origins: Sequence[Any]) -> list: ...


@runtime_checkable
class Explainer(Protocol):
    """Kind ``explainer``: top drivers of upside risk, downside risk and trend.

    An explainer that needs more of the forecast lists it in ``explain_inputs`` and the
    engine passes those as keywords: ``fitted`` (the fitted model at the origin),
    ``level_map`` (the forecast's calibration) and ``thresholds`` (the request's price levels).
    """

    def explain(self, data: Any, state: Any, config: Any, origin: Any, horizon: int,
                warnings: list[str]) -> dict | None: ...


@runtime_checkable
class Trainer(Protocol):
    """What a tunable spec's ``trainer(windows)`` returns (Tune's generic trainable drives it)."""

    step: int

    def train(self, n_steps: int) -> float: ...

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; ``val_ql`` (lower is better) is the one Tune optimises."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def fitted(self) -> Any: ...


#: The protocol each kind's fitted part (or part object) satisfies.
PROTOCOLS: dict[str, type] = {
    "trend": Trend, "volatility": Volatility, "jumps": Jumps, "residuals": Residuals, "paths": PathModel,
    "calibrator": CalibratorPart, "market_state": MarketStatePart, "explainer": Explainer,
}


def needed_inputs(spec: Any) -> tuple[str, ...]:
    """The fit inputs a spec declares (``spec.fit_inputs``; none when it declares nothing)."""
    return tuple(getattr(spec, "fit_inputs", ()))
