"""Flow-matching residuals with a Gaussian-process prior (variant ``fm_gp``).

Importing this package does not import torch; `module` and `training` do (with
gpytorch and torchdiffeq), and are loaded only when a part is built, trained or drawn from.
"""

from aetheris_ray.components.fm_gp.component import FittedFlowMatching, FlowMatchingResiduals

__all__ = ["FlowMatchingResiduals", "FittedFlowMatching"]
