"""Search spaces as data, one per component (STYLE.md 8), converted to Tune domains on use.

Each entry is ``name: (sampler, *args)`` with sampler one of ``choice``,
``uniform``, ``loguniform``, ``randint``.  `TRAINING` holds the fixed training
schedule per component (not searched): steps, report and checkpoint cadence.

>>> sorted(SPACES["rough_vol"])
['batch_size', 'hidden', 'layers', 'lr', 'weight_decay']
"""

from __future__ import annotations

from typing import Any

from aetheris_ray.errors import InvalidInput

SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "rough_vol": {
        "hidden": ("choice", [16, 32, 64]),
        "layers": ("choice", [1, 2]),
        "lr": ("loguniform", 1e-3, 1e-2),
        "weight_decay": ("loguniform", 1e-6, 1e-3),
        "batch_size": ("choice", [128, 256]),
    },
}

#: Fixed per-component schedule: total steps, steps between reports, reports between checkpoints.
#: ``checkpoint_every`` = 2 puts a checkpoint on every ASHA rung (grace 2, reduction factor 2:
#: reports 2, 4, 8, ...), so a trial stopped early still has its last report checkpointed.
TRAINING: dict[str, dict[str, int]] = {
    "rough_vol": {"max_steps": 300, "steps_per_report": 25, "checkpoint_every": 2, "lookback": 64},
}

_SAMPLERS = ("choice", "uniform", "loguniform", "randint")


def search_space(component: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tune ``param_space`` for ``component``: the searched domains plus `TRAINING` constants and ``overrides``."""
    from ray import tune

    if component not in SPACES:
        raise InvalidInput(f"component {component!r} has no search space; valid: {', '.join(sorted(SPACES))}")
    out: dict[str, Any] = {}
    for name, (sampler, *args) in SPACES[component].items():
        if sampler not in _SAMPLERS:
            raise InvalidInput(f"SPACES[{component!r}][{name!r}]: sampler {sampler!r}; valid: {', '.join(_SAMPLERS)}")
        out[name] = getattr(tune, sampler)(*args)
    out.update(TRAINING.get(component, {}))
    out.update(overrides or {})
    return out
