"""Mamba trend (variant ``mamba``): a selective state-space model over the recent multi-series history -> drift path.

Importing this package does not import torch; `module` and `training` do, and are
loaded only when a model is built, trained or loaded.
"""

from aetheris_ray.components.mamba.component import FittedMamba, MambaTrend

__all__ = ["MambaTrend", "FittedMamba"]
