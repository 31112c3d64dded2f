"""The market-state part (kind ``market_state``, variant ``indices``): regime inputs, label and MM indices.

The baseline computes, point in time, the regime descriptors and label and the
market-maker indices Gamma_Squeeze, Inventory_Unwind and Basis_Pressure from
funding, basis and implied-vol series (`aetheris_ray.features.build`).  A market
state built another way (a dealer-gamma engine over an options chain) is another
variant with the same two verbs; the engine calls only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from aetheris_ray.features.build import compute_state, compute_states
from aetheris_ray.features.state import MarketState

__all__ = ["IndicesMarketState"]


@dataclass(frozen=True)
class IndicesMarketState:
    """Regime descriptors + MM indices from the asset's own series (`features.build`)."""

    kind: ClassVar[str] = "market_state"
    name: ClassVar[str] = "indices"
    requires_torch: ClassVar[bool] = False

    def compute_state(self, data: Any, origin: Any) -> MarketState:
        """The state at one origin (data known at its cutoff only)."""
        return compute_state(data, origin)

    def compute_states(self, data: Any, origins: Sequence[Any]) -> list[MarketState]:
        """States at many origins of one asset at once (same numbers as one at a time)."""
        return compute_states(data, origins)
