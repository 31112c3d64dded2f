"""Ray Tune shells: one generic trainable, search spaces from the parts' registrations, the sweep entry point.

Nothing here re-implements training: the trainable drives the core training loop a
tunable spec returns (``spec.trainer(windows)``), and the best trial is saved
through the part's own ``save`` into the model registry.
"""

from tune.spaces import search_space, spaces
from tune.sweep import SweepOptions, SweepResult, run_sweep

__all__ = ["spaces", "search_space", "SweepOptions", "SweepResult", "run_sweep"]
