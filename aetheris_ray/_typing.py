"""Array aliases used in signatures and docstrings.

Axis order is always ``(n_origins, n_paths, horizon)``; a single forecast drops
the first axis.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
BoolArray = npt.NDArray[np.bool_]
