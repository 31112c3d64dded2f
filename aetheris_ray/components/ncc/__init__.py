"""Neural conformal control (calibrator variant ``ncc``): the conformal map, a tiny network's per-level
adjustment, and a PID-style integrator of coverage error per regime x horizon bucket.

Importing this package does not import torch; only `training` does (it is loaded when a
network is trained).  Using a trained artefact needs numpy only.
"""

from aetheris_ray.components.ncc.component import FittedNcc, NccCalibrator, NeuralConformalCalibration

__all__ = ["NeuralConformalCalibration", "NccCalibrator", "FittedNcc"]
