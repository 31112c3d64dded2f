"""Model components (trend, volatility, jumps, residuals): frozen specs, fitted objects, a registry.

>>> from aetheris_ray.components import build_spec
>>> build_spec("volatility", "garch", dist="t").name
'garch'
"""

from aetheris_ray.components.base import (
    MM_KEYS,
    SCHEMA_VERSION,
    ComponentSpec,
    Context,
    FittedBase,
    FittedComponent,
    SpecBase,
    load_component,
)
from aetheris_ray.components.registry import KINDS, REGISTRY, build_spec, names, register, spec_class, spec_from_dict

__all__ = [
    "KINDS", "MM_KEYS", "REGISTRY", "SCHEMA_VERSION",
    "ComponentSpec", "Context", "FittedBase", "FittedComponent", "SpecBase",
    "build_spec", "load_component", "names", "register", "spec_class", "spec_from_dict",
]
