"""Features: stationarity statistics, regime descriptors and label, market-maker indices.

The public entry points build `MarketState` objects from point-in-time data:
`compute_state` (one origin) and `compute_states` (many origins, vectorised, equal
to the one-origin route bitwise).  Formulas are documented in docs/features.md.
"""

from aetheris_ray.features.build import compute_state, compute_states, intraday_rv
from aetheris_ray.features.regime import N_REGIME_FEATURES, REGIME_FEATURES
from aetheris_ray.features.state import REGIME_LABELS, MarketState, regime_code, regime_codes
from aetheris_ray.features.stationarity import denormalise, normalise

__all__ = [
    "N_REGIME_FEATURES",
    "REGIME_FEATURES",
    "REGIME_LABELS",
    "MarketState",
    "compute_state",
    "compute_states",
    "denormalise",
    "intraday_rv",
    "normalise",
    "regime_code",
    "regime_codes",
]
