"""Model parts (one protocol per kind, `contract`), frozen specs, fitted objects, and the variant registry.

>>> from aetheris_ray.components import build_spec
>>> build_spec("volatility", "garch", dist="t").name
'garch'
"""

from aetheris_ray.components.base import MM_KEYS, SCHEMA_VERSION, Context, FittedBase, SpecBase, load_component
from aetheris_ray.components.contract import PROTOCOLS
from aetheris_ray.components.registry import (
    KINDS,
    Variant,
    build_spec,
    names,
    register,
    spec_class,
    spec_from_dict,
    variant,
    variants,
)

__all__ = [
    "KINDS", "MM_KEYS", "PROTOCOLS", "SCHEMA_VERSION",
    "Context", "FittedBase", "SpecBase", "Variant",
    "build_spec", "load_component", "names", "register", "spec_class", "spec_from_dict", "variant", "variants",
]
