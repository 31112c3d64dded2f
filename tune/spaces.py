"""Search spaces as data, one per tunable part, kept in the part's registration; converted to Tune domains here.

Each entry of a `Variant`'s ``search_space`` is ``name: (sampler, *args)`` with
sampler one of ``choice``, ``uniform``, ``loguniform``, ``randint``; its ``training``
holds the fixed schedule (not searched): steps, report and checkpoint cadence.

>>> sorted(spaces()["rough_vol"])
['batch_size', 'hidden', 'layers', 'lr', 'weight_decay']
"""

from __future__ import annotations

from typing import Any

from aetheris_ray.errors import InvalidInput

__all__ = ["spaces", "search_space"]

_SAMPLERS = ("choice", "uniform", "loguniform", "randint")


def spaces() -> dict[str, dict[str, tuple[Any, ...]]]:
    """Tunable variant name -> its search space (as data)."""
    from aetheris_ray.components.registry import tunable

    return {v.name: dict(v.search_space or {}) for v in tunable()}


def search_space(component: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune ``param_space`` for ``component``: its searched domains, training constants, ``component`` and ``overrides``."""
    from ray import tune

    from aetheris_ray.components.registry import tunable

    v = tunable(component)
    out: dict[str, Any] = {}
    for name, (sampler, *args) in (v.search_space or {}).items():
        if sampler not in _SAMPLERS:
            raise InvalidInput(f"{v.kind}/{v.name} search space {name!r}: sampler {sampler!r}; "
                               f"valid: {', '.join(_SAMPLERS)}")
        out[name] = getattr(tune, sampler)(*args)
    out.update(v.training)
    out["component"] = f"{v.kind}/{v.name}"
    out.update(overrides or {})
    return out
