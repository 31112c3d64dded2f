"""Every model part, chosen by name: one `Variant` registration per variant, for every kind.

A registration says what the engine, the model registry and Tune need to know about a
variant, in one place::

    Variant("volatility", "rough_vol", "aetheris_ray.components.rough_vol.component:RoughVolatility",
            artefact=True, fallback="garch", search_space={...}, training={...})

* ``target`` -- the spec class, or ``"module:Class"`` resolved on first use, so a
  neural variant (``requires_torch``) is registered without importing torch;
* ``artefact`` -- its fitted state is a trained artefact from the model registry
  (``NAME``, ``NAME@VERSION`` or ``NAME@latest``), resolved once per forecast by
  `aetheris_ray.registry.resolve_artefact`; ``fallback`` is the baseline of the same
  kind used (and reported) when that artefact is missing or corrupt;
* ``search_space`` / ``training`` -- Tune's search space (data: ``name -> (sampler,
  *args)``, see ``tune/spaces.py``) and fixed training settings; a variant with a
  search space is tunable (``aetheris tune --component NAME``) through the generic
  trainable, which drives the spec's ``trainer(windows)`` (`contract.Trainer`).

Variants come from the built-in table below, from `register` calls, and from other
installed packages through the entry-point group ``aetheris_ray.components``: each entry
point names a `Variant` (or a callable returning an iterable of them), e.g. in the
plug-in's ``pyproject.toml``::

    [project.entry-points."aetheris_ray.components"]
    my_trend = "my_package.trend:VARIANT"

An unknown name raises `InvalidInput` that shows the value and lists the valid names.

>>> sorted(names("jumps"))
['hawkes', 'none', 'poisson']
>>> build_spec("volatility", "ewma", lam=0.97).lam
0.97
>>> variant("volatility", "rough_vol").fallback
'garch'
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Mapping

from aetheris_ray.errors import InvalidInput

__all__ = [
    "KINDS", "PATH_PARTS", "ENTRY_POINT_GROUP", "Variant", "register", "unregister", "variant", "variants", "names",
    "spec_class", "fitted_class", "build_spec", "spec_from_dict", "tunable", "parse_choice", "train_command",
]

#: Every kind of part the engine composes (`aetheris_ray.components.contract` has one protocol per kind).
KINDS = ("trend", "volatility", "jumps", "residuals", "paths", "calibrator", "market_state", "explainer")
#: The kinds a composed path model is built from (``drift + sigma z + jumps``).
PATH_PARTS = ("trend", "volatility", "jumps", "residuals")
ENTRY_POINT_GROUP = "aetheris_ray.components"


@dataclass(frozen=True)
class Variant:
    """One registered variant of a kind (see the module docstring).

    Attributes
    ----------
    kind, name : str
    target : type or str
        The spec class or ``"module:Class"``.
    artefact : bool
        Its fitted state is a trained artefact from the model registry.
    fallback : str or None
        Baseline variant (same kind) used when the artefact is missing or corrupt.
    search_space : dict or None
        Tune's search space as data (``param -> (sampler, *args)``); None: not tunable.
    training : dict
        Fixed training settings merged into every trial's config (``max_steps``, ...);
        ``window_regime: True`` asks for training windows with the regime vector, and
        ``windows_from: "module:function"`` names the builder of a part that does not train on
        price windows (``function(histories, end, start) -> dict of arrays``; ``ncc``).
    description : str
    train_command : str
        How a user trains its artefact (shown when none is registered); default
        ``aetheris tune --component NAME``.
    source : str
        Where it was registered: ``builtin``, ``register()`` or ``entry point <name>``.
    """

    kind: str
    name: str
    target: Any
    artefact: bool = False
    fallback: str | None = None
    search_space: Mapping[str, tuple[Any, ...]] | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    train_command: str = ""
    source: str = "builtin"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"Variant {self.name!r}: kind {self.kind!r} is not known; valid kinds: {', '.join(KINDS)}")
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise InvalidInput(f"Variant name {self.name!r}: use letters, digits, '_' or '-'")
        if self.artefact and not self.fallback:
            raise InvalidInput(f"Variant {self.kind}/{self.name}: artefact=True needs fallback=<baseline name>")

    def spec_class(self) -> type:
        """The spec class (imported on first use)."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(import_module(module), attr)
        return self.target


_C = "aetheris_ray.components"
_BUILTIN: tuple[Variant, ...] = (
    Variant("trend", "zero", f"{_C}.trend:ZeroTrend", description="no drift"),
    Variant("trend", "ar_es", f"{_C}.trend:ArEsTrend", description="AR / exponential smoothing ensemble, EWA weights"),
    Variant(
        "trend", "mamba", f"{_C}.mamba.component:MambaTrend", artefact=True, fallback="ar_es",
        description="selective state-space (Mamba) model over the recent returns / vol / implied vol -> drift path",
        search_space={
            "d_model": ("choice", [8, 16, 32]),
            "layers": ("choice", [1, 2]),
            "lr": ("loguniform", 3e-4, 3e-3),
            "weight_decay": ("loguniform", 1e-6, 1e-3),
            "shrink": ("uniform", 0.1, 0.5),
            "batch_size": ("choice", [64, 128]),
        },
        training={"max_steps": 300, "steps_per_report": 25, "checkpoint_every": 2, "lookback": 64},
    ),
    Variant("volatility", "ewma", f"{_C}.volatility:EwmaVolatility", description="RiskMetrics EWMA"),
    Variant("volatility", "garch", f"{_C}.volatility:GarchVolatility", description="GARCH(1,1) via arch"),
    Variant("volatility", "har", f"{_C}.volatility:HarVolatility", description="HAR-RV from intraday bars"),
    Variant("volatility", "range_garch", f"{_C}.range_vol:RangeGarchVolatility",
            description="GARCH(1,1)-t with the daily range variance in the recursion"),
    Variant("volatility", "range_har", f"{_C}.range_vol:RangeHarVolatility",
            description="log-HAR on daily range variance, direct per horizon"),
    Variant("volatility", "pooled_garch", f"{_C}.range_vol:PooledGarchVolatility", artefact=True,
            fallback="range_garch", train_command="aetheris pool --component pooled_garch --end DATE",
            description="range_garch with its dynamics shrunk towards a panel fit across assets (`aetheris pool`)"),
    Variant("volatility", "pooled_har", f"{_C}.range_vol:PooledHarVolatility", artefact=True, fallback="range_har",
            train_command="aetheris pool --component pooled_har --end DATE",
            description="range_har with slopes shrunk towards a panel fit across assets (`aetheris pool`)"),
    Variant("volatility", "blend", f"{_C}.volatility:BlendVolatility", description="score-weighted blend"),
    Variant(
        "volatility", "rough_vol", f"{_C}.rough_vol.component:RoughVolatility", artefact=True, fallback="garch",
        description="neural rough volatility (fBm-driven log vol, network for its parameters)",
        search_space={
            "hidden": ("choice", [16, 32, 64]),
            "layers": ("choice", [1, 2]),
            "lr": ("loguniform", 1e-3, 1e-2),
            "weight_decay": ("loguniform", 1e-6, 1e-3),
            "batch_size": ("choice", [128, 256]),
        },
        # checkpoint_every 2 puts a checkpoint on every ASHA rung (grace 2, reduction 2: reports 2, 4, 8, ...)
        training={"max_steps": 300, "steps_per_report": 25, "checkpoint_every": 2, "lookback": 64},
    ),
    Variant("jumps", "none", f"{_C}.jumps:NoJumps", description="no separate jumps"),
    Variant("jumps", "poisson", f"{_C}.jumps:PoissonJumps", description="Poisson jumps, regime-conditioned intensity"),
    Variant("jumps", "hawkes", f"{_C}.jumps:HawkesJumps", description="self-exciting Hawkes jumps"),
    Variant("residuals", "gaussian", f"{_C}.residuals:GaussianResiduals", description="N(0, 1)"),
    Variant("residuals", "student_t", f"{_C}.residuals:StudentTResiduals", description="unit-variance Student-t"),
    Variant("residuals", "fhs", f"{_C}.residuals:FhsResiduals", description="filtered historical bootstrap"),
    Variant(
        "residuals", "fm_gp", f"{_C}.fm_gp.component:FlowMatchingResiduals", artefact=True, fallback="student_t",
        description="conditional flow matching from a GP prior over the horizon (regime, vol path, MM indices)",
        search_space={
            "hidden": ("choice", [32, 64]),
            "layers": ("choice", [2, 3]),
            "lr": ("loguniform", 5e-4, 5e-3),
            "weight_decay": ("loguniform", 1e-6, 1e-3),
            "batch_size": ("choice", [256, 512]),
            "kernel": ("choice", ["matern52", "rbf"]),
        },
        training={"max_steps": 600, "steps_per_report": 50, "checkpoint_every": 2, "lookback": 64,
                  "window_regime": True},
    ),
    Variant("paths", "composed", f"{_C}.paths:ComposedPaths", description="drift + sigma z + jumps from the four parts"),
    Variant(
        "paths", "jump_sde", f"{_C}.jump_sde.component:JumpSdePaths", artefact=True, fallback="composed",
        description="neural jump SDE: network drift, diffusion, intensity and jump sizes, trained by likelihood",
        search_space={
            "hidden": ("choice", [8, 16, 32]),
            "layers": ("choice", [1, 2]),
            "lr": ("loguniform", 1e-3, 1e-2),
            "weight_decay": ("loguniform", 1e-6, 1e-3),
            "jump_decay": ("uniform", 0.03, 0.3),
            "batch_size": ("choice", [128, 256]),
        },
        training={"max_steps": 300, "steps_per_report": 25, "checkpoint_every": 2, "lookback": 64},
    ),
    Variant("calibrator", "conformal", "aetheris_ray.calibration:ConformalCalibration",
            description="conformal level maps by regime x horizon bucket"),
    Variant("calibrator", "ncc", "aetheris_ray.components.ncc.component:NeuralConformalCalibration", artefact=True,
            fallback="conformal",
            description="neural conformal control: conformal map + a network's per-level adjustment + a PID "
                        "integrator of coverage error per regime x bucket (trained on calibration pairs)",
            search_space={
                "hidden": ("choice", [8, 16, 32]),
                "lr": ("loguniform", 1e-3, 1e-2),
                "weight_decay": ("loguniform", 1e-6, 1e-3),
                "max_adjust": ("choice", [0.3, 0.5]),
            },
            # trains on calibration pairs of a baseline walk-forward, not on price windows
            training={"max_steps": 300, "steps_per_report": 25, "checkpoint_every": 2,
                      "windows_from": "aetheris_ray.components.ncc.component:walk_forward_windows"}),
    Variant("market_state", "indices", "aetheris_ray.features.market_state:IndicesMarketState",
            description="regime descriptors + MM indices from funding, basis, implied vol"),
    Variant("market_state", "greeks", "aetheris_ray.features.greeks:GreeksMarketState",
            description="dealer greeks (GEX, vanna, charm) of an observed options chain, or of an SVI chain "
                        "built from the implied-vol index; indices without either"),
    Variant("explainer", "surrogate", "aetheris_ray.explain:SurrogateExplainer",
            description="ridge surrogate + permutation importance over past forecasts"),
    Variant("explainer", "integrated_gradients", "aetheris_ray.explain_ig:IntegratedGradientsExplainer",
            description="integrated gradients through a torch re-expression of the fitted model, completeness "
                        "checked; the surrogate when the model has no differentiable path"),
)

_TABLE: dict[str, dict[str, Variant]] = {k: {} for k in KINDS}
for _v in _BUILTIN:
    _TABLE[_v.kind][_v.name] = _v
_CLASSES: dict[tuple[str, str], type] = {}
_LOCK = threading.Lock()
_PLUGINS_LOADED = False


def _load_entry_points() -> None:
    """Register the variants of installed plug-ins (group `ENTRY_POINT_GROUP`), once per process.

    A plug-in that fails to load is reported with a warning and skipped; it never
    breaks the built-in variants.
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    with _LOCK:
        if _PLUGINS_LOADED:
            return
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                items = obj() if callable(obj) and not isinstance(obj, Variant) else obj
                items = [items] if isinstance(items, Variant) else list(items)
                for v in items:
                    if not isinstance(v, Variant):
                        raise TypeError(f"{v!r} is not a Variant")
                    _add(dataclasses.replace(v, source=f"entry point {ep.name}"))
            except Exception as e:  # noqa: BLE001 - a broken plug-in must not break the engine
                warnings.warn(f"component plug-in {ep.name!r} ({ep.value}) not loaded: {type(e).__name__}: {e}",
                              RuntimeWarning, stacklevel=2)
        _PLUGINS_LOADED = True


def reload_entry_points() -> None:
    """Scan the entry points again (after installing a plug-in into a running process; tests)."""
    global _PLUGINS_LOADED
    _PLUGINS_LOADED = False
    _load_entry_points()


def _add(v: Variant) -> None:
    _TABLE[v.kind][v.name] = v
    _CLASSES.pop((v.kind, v.name), None)


def train_command(name: str) -> str:
    """The command that trains the artefact of the variant ``name`` (any kind)."""
    _load_entry_points()
    for table in _TABLE.values():
        v = table.get(name)
        if v is not None and v.train_command:
            return v.train_command
    return f"aetheris tune --component {name}"


def register(kind_or_variant: str | Variant, name: str | None = None, target: Any = None, **meta: Any) -> Variant:
    """Add (or replace) a variant: ``register(Variant(...))`` or ``register(kind, name, target, **meta)``."""
    if isinstance(kind_or_variant, Variant):
        v = kind_or_variant
    else:
        if name is None or target is None:
            raise InvalidInput("register(kind, name, target): name and target are required")
        v = Variant(kind_or_variant, name, target, source="register()", **meta)
    _add(v)
    return v


def unregister(kind: str, name: str) -> None:
    """Remove a variant added by `register` (tests); built-in variants cannot be removed."""
    if any(v.kind == kind and v.name == name for v in _BUILTIN):
        raise InvalidInput(f"{kind}/{name} is built in; it cannot be unregistered")
    _kind(kind).pop(name, None)
    _CLASSES.pop((kind, name), None)


def _kind(kind: str) -> dict[str, Variant]:
    if kind not in _TABLE:
        raise InvalidInput(f"component kind {kind!r} is not known; valid kinds: {', '.join(KINDS)}")
    _load_entry_points()
    return _TABLE[kind]


def names(kind: str) -> list[str]:
    """Registered variant names of one kind (built-in, registered and plug-ins)."""
    return list(_kind(kind))


def variants(kind: str | None = None) -> list[Variant]:
    """Every registration (of one kind, or of all kinds)."""
    kinds = KINDS if kind is None else (kind,)
    return [v for k in kinds for v in _kind(k).values()]


def variant(kind: str, name: str) -> Variant:
    """The registration of ``kind/name``; `InvalidInput` listing the valid names when unknown."""
    table = _kind(kind)
    if name not in table:
        raise InvalidInput(f"{kind} component {name!r} is not registered; valid names: {', '.join(sorted(table))}")
    return table[name]


def spec_class(kind: str, name: str) -> type:
    """The spec class registered as ``kind/name`` (imported on first use)."""
    key = (kind, name)
    cls = _CLASSES.get(key)
    if cls is None:
        cls = variant(kind, name).spec_class()
        _CLASSES[key] = cls
    return cls


def fitted_class(kind: str, name: str) -> type:
    """The fitted class of ``kind/name``."""
    return spec_class(kind, name).fitted_cls


def build_spec(kind: str, name: str, **params: Any) -> Any:
    """Instantiate a spec by name; unknown hyperparameters are refused with the valid ones listed."""
    cls = spec_class(kind, name)
    valid = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(params) - valid)
    if extra:
        raise InvalidInput(f"{kind} {name!r}: unknown parameter(s) {extra}; valid: {sorted(valid) or 'none'}")
    if hasattr(cls, "coerce_params"):
        params = cls.coerce_params(params)
    return cls(**params)


def spec_from_dict(kind: str, d: Mapping[str, Any] | str) -> Any:
    """Inverse of ``spec.to_dict()``; a bare string is a name with default parameters."""
    if isinstance(d, str):
        return build_spec(kind, d)
    d = dict(d)
    if "name" not in d:
        raise InvalidInput(f"{kind} component {d!r}: missing 'name'; valid names: {', '.join(sorted(_kind(kind)))}")
    name = d.pop("name")
    return build_spec(kind, name, **d)


def parse_choice(text: str) -> tuple[str, str, str | None]:
    """``"KIND=NAME"`` or ``"KIND=NAME@VERSION"`` -> (kind, name, version or None), checked against the registry.

    >>> parse_choice("volatility=rough_vol@latest")
    ('volatility', 'rough_vol', 'latest')
    """
    kind, eq, rest = str(text).partition("=")
    kind = kind.strip()
    if not eq or not rest.strip():
        raise InvalidInput(f"--component {text!r}: write KIND=NAME or KIND=NAME@VERSION, e.g. volatility=rough_vol")
    if kind not in KINDS:
        raise InvalidInput(f"--component {text!r}: kind {kind!r} is not known; valid kinds: {', '.join(KINDS)}")
    name, _, version = rest.strip().partition("@")
    v = variant(kind, name)
    if version and not v.artefact:
        raise InvalidInput(f"--component {text!r}: {kind} {name!r} has no registered artefact to pin a version of")
    return kind, name, version or None


def tunable(name: str | None = None) -> list[Variant] | Variant:
    """Variants with a search space (what ``aetheris tune --component`` accepts); one by name, or all."""
    found = [v for v in variants() if v.search_space is not None]
    if name is None:
        return found
    for v in found:
        if v.name == name:
            return v
    raise InvalidInput(f"component {name!r} is not tunable; tunable components: "
                       f"{', '.join(sorted(v.name for v in found)) or 'none'}")

