"""Residuals paired with a volatility model that has no returns filter (rough vol)."""

import numpy as np

from aetheris_ray.components.residuals import StudentTResiduals
from aetheris_ray.components.volatility import FittedVolatility


class NoFilterVol(FittedVolatility):
    """A volatility model driven by its own noise: `filter` is not implemented."""


def test_student_t_from_vol_falls_back_to_ewma_when_vol_has_no_filter():
    rng = np.random.default_rng(0)
    r = 0.03 * rng.standard_t(4, size=800)
    vol = object.__new__(NoFilterVol)
    from_vol = StudentTResiduals(source="vol").fit(r, vol=vol)
    from_ewma = StudentTResiduals(source="ewma").fit(r)
    assert np.isfinite(from_vol.params["nu"]).all()
    np.testing.assert_array_equal(from_vol.params["nu"], from_ewma.params["nu"])
