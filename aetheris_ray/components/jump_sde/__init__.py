"""Neural jump SDE (variant ``jump_sde`` of kind ``paths``): a whole-path generator trained by likelihood.

Importing this package does not import torch; `module` and `training` do, and are
loaded only when a model is built, trained or used.
"""

from aetheris_ray.components.jump_sde.component import FittedJumpSde, JumpSdePaths

__all__ = ["JumpSdePaths", "FittedJumpSde"]
