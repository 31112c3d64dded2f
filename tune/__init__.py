"""Ray Tune shells: one thin trainable per neural component, search spaces as data, the sweep entry point.

Nothing here re-implements training: the trainables call the core
`aetheris_ray.components.rough_vol.training.Trainer` step, and the best trial is
saved through the component's own ``save`` into the model registry.
"""

from tune.spaces import SPACES, TRAINING, search_space
from tune.sweep import SweepOptions, SweepResult, run_sweep

__all__ = ["SPACES", "TRAINING", "search_space", "SweepOptions", "SweepResult", "run_sweep"]
