"""Neural rough volatility (variant ``rough_vol``): fBm-driven log-vol with a network for its parameters.

Importing this package does not import torch; `module` and `training` do, and are
loaded only when a model is built, trained or loaded.
"""

from aetheris_ray.components.rough_vol.component import FittedRoughVol, RoughVolatility

__all__ = ["RoughVolatility", "FittedRoughVol"]
