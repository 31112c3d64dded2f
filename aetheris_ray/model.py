"""What the model is: its parts by name, the presets, the composer that fits them, the fitted model.

* `EngineConfig` names one variant per kind (`components.registry.KINDS`) plus the
  walk-forward and calibration settings; ``version`` hashes all of it.
* Presets are data (``presets.toml`` beside this module): ``--model baseline`` is
  the defaults, a preset lists only what it changes.  ``--component KIND=NAME[@VERSION]``
  (repeatable; `with_components`) swaps single parts of any preset.
* `resolve_config` resolves every part with a registered artefact once, in one place
  (`aetheris_ray.registry.resolve_artefact`): ``latest`` becomes the concrete registry
  version, or the part falls back to its kind's baseline and the config records why.
  The resolved config's ``version`` names what produced the answer.
* `fit_model` is the composer: it fits the parts the path model is built from, in the
  order their declared ``fit_inputs`` require, and hands each exactly what it declares.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aetheris_ray.calibration import CalibrationConfig
from aetheris_ray.components.base import Context, load_component
from aetheris_ray.components.contract import FIT_INPUTS, needed_inputs
from aetheris_ray.components.registry import KINDS, build_spec, parse_choice, variant
from aetheris_ray.errors import InvalidInput, ModelNotFound

__all__ = [
    "ComponentChoice", "Fallback", "EngineConfig", "PRESETS", "presets", "model_config", "parse_component",
    "with_components", "resolve_config", "build_calibrator", "FittedModel", "fit_model", "fit_order", "state_inputs",
    "MODEL_KINDS",
]

#: Kinds whose parts are fitted on returns (the path model and what it is built from).
MODEL_KINDS = ("trend", "volatility", "jumps", "residuals", "paths")


class ComponentChoice(BaseModel):
    """One part chosen by registry name, with its hyperparameters and (artefact variants) a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    version: str | None = Field(default=None, description="registry version ('latest' or an id); artefact variants only")


class Fallback(BaseModel):
    """A part that could not use its registered artefact: what was asked, what was used, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    wanted: str
    used: str
    why: str


class EngineConfig(BaseModel):
    """What the model is: one variant per kind plus the walk-forward and calibration settings.

    ``version`` (name + a hash of everything here + the registry versions of
    artefact parts) is the model version reported with every forecast and keys
    every cache.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "baseline"
    trend: ComponentChoice = ComponentChoice(name="ar_es")
    # GARCH(1,1)-t and range-GARCH, equal weights (chosen on the pre-2022 validation periods; docs/engine.md)
    volatility: ComponentChoice = ComponentChoice(
        name="blend", params={"members": ["garch", "range_garch"], "weighting": "fixed"})
    jumps: ComponentChoice = ComponentChoice(name="none")
    residuals: ComponentChoice = ComponentChoice(name="student_t", params={"source": "vol"})
    paths: ComponentChoice = ComponentChoice(name="composed")
    calibrator: ComponentChoice = ComponentChoice(name="conformal")
    market_state: ComponentChoice = ComponentChoice(name="indices")
    explainer: ComponentChoice = ComponentChoice(name="integrated_gradients")  # the surrogate where not differentiable
    lookback: int = Field(default=1000, ge=60, le=5000, description="context returns each origin conditions on")
    refit_every: int = Field(default=7, ge=1, le=365, description="refit on days with day_number % refit_every == 0")
    min_history: int = Field(default=30, ge=10, description="fewest returns an origin needs")
    walkforward_paths: int = Field(default=1000, ge=100, le=20000, description="paths per origin in walk-forwards")
    calibrate: bool = True
    calibration: CalibrationConfig = CalibrationConfig()
    resolved: bool = Field(default=False, description="artefact parts resolved to concrete registry versions")
    fallbacks: tuple[Fallback, ...] = ()
    registry: str | None = Field(default=None, description="the registry root the artefacts were resolved in "
                                 "(None: the settings' registry); where they are loaded from")

    def choice(self, kind: str) -> ComponentChoice:
        return getattr(self, kind)

    def used_kinds(self) -> tuple[str, ...]:
        """The model kinds this configuration fits: the path model and, transitively, what it is built from."""
        out: list[str] = []

        def visit(kind: str) -> None:
            if kind in out:
                return
            for inp in needed_inputs(self.spec(kind)):
                if inp in MODEL_KINDS:
                    visit(inp)
            out.append(kind)

        visit("paths")
        return tuple(out)

    def spec(self, kind: str) -> Any:
        c = self.choice(kind)
        return build_spec(kind, c.name, **c.params)

    def specs(self) -> dict[str, Any]:
        """The specs of the fitted kinds, built through the registry (unknown names raise `InvalidInput`)."""
        out = {kind: self.spec(kind) for kind in MODEL_KINDS}
        res, jmp = out["residuals"], out["jumps"]
        if hasattr(res, "jump_threshold") and hasattr(jmp, "threshold") and res.jump_threshold != jmp.threshold:
            raise InvalidInput(f"residuals.jump_threshold={res.jump_threshold} differs from jumps.threshold="
                               f"{jmp.threshold}: jumps would be counted twice or missed; use the same value")
        for kind in MODEL_KINDS:
            c = self.choice(kind)
            if c.version is not None and not variant(kind, c.name).artefact:
                raise InvalidInput(f"{kind}={c.name}@{c.version}: {c.name!r} has no registered artefact to pin")
        return out

    def artefact_parts(self) -> dict[str, ComponentChoice]:
        """Kind -> choice of the parts whose fitted state comes from the model registry (model kinds, calibrator)."""
        return {k: self.choice(k) for k in (*MODEL_KINDS, "calibrator") if variant(k, self.choice(k).name).artefact}

    @property
    def version(self) -> str:
        """``<name>-<hash>``, plus ``+kind=name@registry-version`` per artefact part and ``+kind=fallback:name``.

        Kept per object (a config is frozen: `_kept`)."""
        return _kept(_VERSIONS, (id(self),), self, self._version)

    def _version(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", exclude={"resolved", "fallbacks", "registry"}), sort_keys=True).encode()
        out = f"{self.name}-{hashlib.sha1(blob).hexdigest()[:10]}"
        for kind, c in self.artefact_parts().items():
            out += f"+{kind}={c.name}@{c.version or 'latest'}"
        for fb in self.fallbacks:
            out += f"+{fb.kind}=fallback:{fb.used}"
        return out

    def part_names(self) -> dict[str, str]:
        """Kind -> ``name`` or ``name@version`` of every part (the forecast's metadata)."""
        out = {}
        for kind in KINDS:
            c = self.choice(kind)
            out[kind] = f"{c.name}@{c.version}" if c.version else c.name
        return out


#: (id(config),) -> (config, version): `EngineConfig.version` once per (frozen) object.
_VERSIONS: dict[tuple, tuple[EngineConfig, Any]] = {}
#: (id(config), registry root) -> (config, resolved config) for configs without artefact parts.
_RESOLVED: dict[tuple, tuple[EngineConfig, Any]] = {}


def _kept(table: dict[tuple, tuple[EngineConfig, Any]], key: tuple, cfg: EngineConfig, make: Any) -> Any:
    """``make()`` once per frozen ``cfg`` object (and the rest of ``key``).  The table holds the object,
    so the id in ``key`` is not reused while the entry lives; it is emptied past 256 entries."""
    kept = table.get(key)
    if kept is not None and kept[0] is cfg:
        return kept[1]
    out = make()
    if len(table) >= 256:
        table.clear()
    table[key] = (cfg, out)
    return out


# -- presets -----------------------------------------------------------------------------------

_PRESETS_FILE = Path(__file__).with_name("presets.toml")


def presets() -> dict[str, EngineConfig]:
    """Named model configurations from ``presets.toml`` (each lists what it changes from the defaults)."""
    raw = tomllib.loads(_PRESETS_FILE.read_text())
    out = {}
    for name, body in raw.items():
        body = dict(body)
        body.pop("description", None)
        out[name] = EngineConfig(name=name, **body)
    return out


PRESETS: dict[str, EngineConfig] = presets()


def parse_component(text: str) -> tuple[str, ComponentChoice]:
    """``"KIND=NAME"`` or ``"KIND=NAME@VERSION"`` -> (kind, choice); `InvalidInput` naming the problem.

    >>> parse_component("volatility=rough_vol@latest")
    ('volatility', ComponentChoice(name='rough_vol', params={}, version='latest'))
    """
    kind, name, version = parse_choice(text)
    return kind, ComponentChoice(name=name, version=version)


def with_components(cfg: EngineConfig, components: Sequence[str] | Mapping[str, str]) -> EngineConfig:
    """``cfg`` with single parts swapped (``["volatility=rough_vol@latest", ...]``); the name records the swap."""
    items = [f"{k}={v}" for k, v in components.items()] if isinstance(components, Mapping) else list(components)
    if not items:
        return cfg
    update: dict[str, Any] = {}
    for text in items:
        kind, choice = parse_component(text)
        if kind in update:
            raise InvalidInput(f"--component: kind {kind!r} given twice")
        update[kind] = choice
    tag = ",".join(f"{k}={c.name}" + (f"@{c.version}" if c.version else "") for k, c in update.items())
    out = cfg.model_copy(update={**update, "name": f"{cfg.name}+{tag}"})
    out.specs()
    return out


def model_config(name: str | None, components: Sequence[str] = ()) -> tuple[EngineConfig, list[str]]:
    """The configuration of a model name (``None`` -> baseline) with ``components`` swapped in, and any notes.

    ``NAME@VERSION`` pins the registry version of the preset's artefact part
    (``rough_vol@<version>``); ``"latest"`` is the baseline until the registry serves
    whole engine models (with a note).  Kept per name and components (the presets and
    the parts' registry do not change in a process): every forecast asks.
    """
    cfg, notes = _model_config(name, tuple(components))
    return cfg, list(notes)


@functools.lru_cache(maxsize=64)
def _model_config(name: str | None, components: tuple[str, ...]) -> tuple[EngineConfig, tuple[str, ...]]:
    notes: list[str] = []
    key = name or "baseline"
    key, _, pinned = key.partition("@")
    if key == "latest":
        notes.append("model 'latest': no registered engine model yet; using 'baseline'")
        key = "baseline"
    if key not in PRESETS:
        raise ModelNotFound(f"model {name!r} is not known; valid: {', '.join(sorted(PRESETS))}, 'latest', "
                            "or NAME@VERSION to pin a registered component version (e.g. rough_vol@<version>)")
    cfg = PRESETS[key]
    if pinned:
        parts = cfg.artefact_parts()
        if not parts:
            raise ModelNotFound(f"model {name!r}: {key!r} has no registered component to pin a version of")
        kind, choice = next(iter(parts.items()))
        cfg = cfg.model_copy(update={kind: choice.model_copy(update={"version": pinned})})
    cfg = with_components(cfg, components)
    cfg.specs()
    return cfg, tuple(notes)


def resolve_config(cfg: EngineConfig, registry: Any = None) -> EngineConfig:
    """Every artefact part pinned to its concrete registry version, or replaced by its fallback (recorded).

    Idempotent: a resolved config is returned as it is.  ``registry`` defaults to
    the settings' registry.
    """
    if cfg.resolved:
        return cfg
    from aetheris_ray.registry import Registry, resolve_artefact

    root = registry.root if isinstance(registry, Registry) else registry
    where = None if root is None else str(root)
    if not cfg.artefact_parts():  # nothing to look up: the same resolved object for the same config and root
        return _kept(_RESOLVED, (id(cfg), where), cfg,
                     lambda: cfg.model_copy(update={"resolved": True, "registry": where}))
    update: dict[str, Any] = {"resolved": True, "registry": where}
    fallbacks = list(cfg.fallbacks)
    for kind, c in cfg.artefact_parts().items():
        res = resolve_artefact(kind, c.name, c.version or "latest", registry=registry)
        if res.version is not None:
            update[kind] = c.model_copy(update={"version": res.version})
        else:
            update[kind] = ComponentChoice(name=res.fallback)
            fallbacks.append(Fallback(kind=kind, wanted=f"{c.name}@{c.version or 'latest'}", used=res.fallback,
                                      why=res.why))
    update["fallbacks"] = tuple(fallbacks)
    return cfg.model_copy(update=update)


def build_calibrator(cfg: EngineConfig, asset: str) -> Any:
    """An empty calibrator of the configuration's calibrator part (``calibrator_class(config, asset, version)``).

    An artefact calibrator (``ncc``) of a resolved configuration gets its registered
    artefact, loaded here once per process (`aetheris_ray.registry.load_artefact`).
    """
    c = cfg.calibrator
    part = build_spec("calibrator", c.name, **c.params)
    if variant("calibrator", c.name).artefact and c.version is not None and cfg.resolved:
        from aetheris_ray.registry import load_artefact

        return part.build(cfg.calibration, asset, cfg.version, artefact=load_artefact(c.name, c.version, cfg.registry))
    return part.build(cfg.calibration, asset, cfg.version)


# -- the fitted model --------------------------------------------------------------------------


@dataclass(frozen=True)
class FittedModel:
    """The fitted path model (kind ``paths``), batched over origins; the parts it is built from are its children.

    The engine calls only the path model's verbs (`contract.PathModel`) plus a
    scenario's step scaling, which works for any path model.
    """

    paths: Any

    @classmethod
    def from_parts(cls, **parts: Any) -> "FittedModel":
        """The composed path model of fitted ``trend``, ``volatility``, ``jumps`` and ``residuals`` (tests, tools)."""
        from aetheris_ray.components.paths import ComposedPaths

        return cls(ComposedPaths().fit(np.empty(0), **parts))

    def part(self, kind: str) -> Any:
        """The fitted part of ``kind`` (`KeyError` when the path model has none)."""
        return self.parts()[kind]

    def parts(self) -> dict[str, Any]:
        """Kind -> fitted part (the path model's own parts, and the path model)."""
        own = self.paths.by_kind() if hasattr(self.paths, "by_kind") else {}
        return {**own, "paths": self.paths}

    def take(self, idx: Any) -> "FittedModel":
        return FittedModel(self.paths.take(idx))

    @staticmethod
    def stack(fits: list["FittedModel"]) -> "FittedModel":
        return FittedModel(type(fits[0].paths).stack([f.paths for f in fits]))

    def condition(self, ctx: Context) -> dict[str, Any]:
        """Per-origin conditioning of the path model (``step_scale`` added by a scenario)."""
        return dict(self.paths.condition(ctx))

    def simulate(self, cond: Mapping[str, Any], n_paths: int, horizon: int, rng: np.random.Generator) -> np.ndarray:
        """Daily log-return paths, shape (n_origins, n_paths, horizon), float64, scenario scaling applied."""
        return self.scenario_scaled(cond, self.paths.simulate(cond, n_paths, horizon, rng))

    def simulate_tilted(self, cond: Mapping[str, Any], n_paths: int, horizon: int, eta: np.ndarray,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`simulate` with the innovations under the tilt ``eta`` (importance sampling, `aetheris_ray.tails`)."""
        paths, log_lr = self.paths.simulate_tilted(cond, n_paths, horizon, eta, rng)
        return self.scenario_scaled(cond, paths), log_lr  # a deterministic map of the paths: the ratio stands

    @property
    def tiltable(self) -> bool:
        return bool(getattr(self.paths, "tiltable", False))

    @property
    def splittable(self) -> bool:
        """Whether the path model can leave the last step out of a tilted draw (`tails`: its law integrated exactly)."""
        return bool(getattr(self.paths, "splittable", False))

    def simulate_tilted_split(self, cond: Mapping[str, Any], n_paths: int, horizon: int, eta: np.ndarray,
                              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rest, scale, log_lr)``, each (n_origins, n_paths): `simulate_tilted` as ``X_h = rest + scale z_h``,
        scenario scaling applied (the last step's deviation from the drift, ``jump + sigma_h z_h``, is scaled
        by its multiplier: the jump in ``rest``, ``sigma_h`` in ``scale``)."""
        steps, last, log_lr = self.paths.simulate_tilted_split(cond, n_paths, horizon, eta, rng)
        steps = self.scenario_scaled(cond, steps)
        if "step_scale" in cond:
            last = last * np.asarray(cond["step_scale"], dtype=float)[:, None, horizon - 1]
        return steps.sum(axis=2), last, log_lr

    def last_step_cdf(self, cond: Mapping[str, Any], x: np.ndarray, side: str) -> np.ndarray:
        return self.paths.last_step_cdf(cond, x, side)

    def tilt_profile(self, cond: Mapping[str, Any], horizon: int) -> tuple[float, np.ndarray]:
        """``(sum of the daily drift, expected daily vol (horizon,))`` of origin 0 (importance sampling)."""
        return self.paths.tilt_profile(cond, horizon)

    def scenario_scaled(self, cond: Mapping[str, Any], paths: np.ndarray) -> np.ndarray:
        """``paths`` with each step's deviation from the drift multiplied by ``cond["step_scale"]`` (in place).

        `aetheris_ray.scenario.scenario_effect` gives the multipliers; every sampler of the
        model's paths (plain or tilted) applies them, so a scenario moves all of its numbers.
        """
        if "step_scale" not in cond:
            return paths
        horizon = paths.shape[-1]
        scale = np.asarray(cond["step_scale"], dtype=float)[:, None, :horizon]
        paths *= scale
        paths += self.paths.drift(cond, horizon) * (1.0 - scale)
        return paths

    def info(self) -> dict[str, Any]:
        return {k: dict(v.info) for k, v in self.parts().items() if v.info}

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        return self.paths.save(Path(directory) / "paths", overwrite=overwrite)

    @staticmethod
    def load(directory: str | Path) -> "FittedModel":
        return FittedModel(load_component(Path(directory) / "paths"))


def fit_order(specs: Mapping[str, Any], kinds: Sequence[str]) -> list[str]:
    """``kinds`` ordered so that every kind comes after the kinds its spec's ``fit_inputs`` name."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(kind: str) -> None:
        if kind in order:
            return
        if kind in visiting:
            raise InvalidInput(f"model parts: {kind} is in a cycle of fit inputs")
        visiting.add(kind)
        for inp in needed_inputs(specs[kind]):
            if inp in specs:
                visit(inp)
            elif inp not in FIT_INPUTS and inp != "artefact":
                raise InvalidInput(f"{kind} {specs[kind].name!r} declares fit input {inp!r}; "
                                   f"valid: {', '.join(FIT_INPUTS)} or a kind of the model")
        visiting.discard(kind)
        order.append(kind)

    for k in kinds:
        visit(k)
    return order


def state_inputs(state: Any) -> dict[str, Any]:
    """The ``rv``, ``ranges``, ``iv`` and ``market`` fit inputs (`contract.FIT_INPUTS`) read from a `MarketState`
    at the fit day."""
    return {"rv": state.intraday_rv, "ranges": None if state.log_hl is None else (state.log_hl, state.log_co),
            "iv": state.implied_vol, "market": state.market_log_hl}


def fit_model(cfg: EngineConfig, specs: Mapping[str, Any], returns: np.ndarray, *, warm: FittedModel | None = None,
              rv: Any = None, ranges: Any = None, iv: Any = None, market: Any = None, features: Any = None,
              order: Sequence[str] | None = None,
              artefacts: Mapping[str, Any] | None = None) -> FittedModel:
    """Fit the model's parts on ``returns`` (the composer): each gets exactly the inputs it declares.

    Parameters
    ----------
    cfg : EngineConfig, resolved (`resolve_config`): artefact parts carry concrete versions
    specs : kind -> spec (``cfg.specs()``, built once by the caller)
    returns : ndarray, daily log-returns known at the fit day
    warm : FittedModel or None, the anchor fit a part may warm-start from (``warm``)
    rv, ranges, iv, market, features : the ``rv``, ``ranges``, ``iv``, ``market`` and ``features`` inputs
        (see `contract`)
    order : the fit order (`fit_order`), when the caller computed it once
    artefacts : kind -> a fitted artefact to use instead of the registry's (tests, tools)
    """
    from aetheris_ray.registry import load_artefact

    order = order or fit_order(specs, cfg.used_kinds())
    warm_parts = warm.parts() if warm is not None else {}
    given = {"rv": rv, "ranges": ranges, "iv": iv, "market": market, "features": features}
    fitted: dict[str, Any] = {}
    for kind in order:
        spec = specs[kind]
        kw: dict[str, Any] = {}
        for inp in needed_inputs(spec):
            if inp == "warm":
                kw["warm"] = warm_parts.get(kind)
            elif inp == "artefact":
                c = cfg.choice(kind)
                given_art = (artefacts or {}).get(kind)
                kw["artefact"] = given_art if given_art is not None else load_artefact(c.name, c.version or "latest", cfg.registry)
            elif inp in given:
                kw[inp] = given[inp]
            else:
                kw[inp] = fitted[inp]
        fitted[kind] = spec.fit(returns, **kw)
    return FittedModel(fitted["paths"])
