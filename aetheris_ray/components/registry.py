"""Components chosen by name: ``{"volatility": {"ewma": ..., "garch": ..., ...}, ...}``.

Entries are spec classes, or ``"module:Class"`` strings resolved on first use, so a
neural variant (``requires_torch``) can be registered without importing torch::

    register("volatility", "rough_vol", "aetheris_ray.components.rough.component:RoughVolatility")

An unknown name raises `InvalidInput` that shows the value and lists the valid names.

>>> sorted(names("jumps"))
['hawkes', 'none', 'poisson']
>>> build_spec("volatility", "ewma", lam=0.97).lam
0.97
"""

from __future__ import annotations

import dataclasses
from importlib import import_module
from typing import Any, Mapping

from aetheris_ray.errors import InvalidInput

__all__ = ["KINDS", "REGISTRY", "register", "names", "spec_class", "fitted_class", "build_spec", "spec_from_dict"]

KINDS = ("trend", "volatility", "jumps", "residuals")

REGISTRY: dict[str, dict[str, Any]] = {
    "trend": {
        "zero": "aetheris_ray.components.trend:ZeroTrend",
        "ar_es": "aetheris_ray.components.trend:ArEsTrend",
    },
    "volatility": {
        "ewma": "aetheris_ray.components.volatility:EwmaVolatility",
        "garch": "aetheris_ray.components.volatility:GarchVolatility",
        "har": "aetheris_ray.components.volatility:HarVolatility",
        "blend": "aetheris_ray.components.volatility:BlendVolatility",
        "rough_vol": "aetheris_ray.components.rough_vol.component:RoughVolatility",
    },
    "jumps": {
        "none": "aetheris_ray.components.jumps:NoJumps",
        "poisson": "aetheris_ray.components.jumps:PoissonJumps",
        "hawkes": "aetheris_ray.components.jumps:HawkesJumps",
    },
    "residuals": {
        "gaussian": "aetheris_ray.components.residuals:GaussianResiduals",
        "student_t": "aetheris_ray.components.residuals:StudentTResiduals",
        "fhs": "aetheris_ray.components.residuals:FhsResiduals",
    },
}


def register(kind: str, name: str, target: Any) -> None:
    """Add (or replace) a variant: a spec class or a ``"module:Class"`` path."""
    _kind(kind)[name] = target


def names(kind: str) -> list[str]:
    """Registered variant names of one kind."""
    return list(_kind(kind))


def _kind(kind: str) -> dict[str, Any]:
    if kind not in REGISTRY:
        raise InvalidInput(f"component kind {kind!r} is not known; valid kinds: {', '.join(KINDS)}")
    return REGISTRY[kind]


def spec_class(kind: str, name: str) -> type:
    """The spec class registered as ``kind/name``."""
    table = _kind(kind)
    if name not in table:
        raise InvalidInput(f"{kind} component {name!r} is not registered; valid names: {', '.join(sorted(table))}")
    target = table[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(import_module(module), attr)
        table[name] = target
    return target


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
