"""The neural presets (`sota`, one per part): part-by-part fallback, and the registered parts really used."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.components import spec_class
from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.model import PRESETS

pytestmark = pytest.mark.torch


def _artefact(kind: str, name: str):
    pytest.importorskip("torch")
    return spec_class(kind, name).fitted_cls.from_params(seed=0)


def test_sota_composes_every_neural_part_of_the_path_model():
    parts = PRESETS["sota"].part_names()
    assert (parts["volatility"], parts["residuals"], parts["trend"]) == ("rough_vol", "fm_gp", "mamba")
    for preset, kind in (("fm_gp", "residuals"), ("mamba", "trend"), ("jump_sde", "paths")):
        assert PRESETS[preset].part_names()[kind] == preset


def test_sota_falls_back_part_by_part_with_a_corrupt_artefact(isolated_home):
    """mamba registered, rough_vol registered but corrupt, fm_gp missing: the forecast uses mamba and falls
    back to garch and student_t for the other two, saying so for each; nothing raises, the cone is finite."""
    from aetheris_ray.api import forecast
    from aetheris_ray.registry import Registry

    reg = Registry()
    good = reg.register(_artefact("trend", "mamba"))
    bad = reg.register(_artefact("volatility", "rough_vol"))
    for f in (reg.root / bad.version / "model").iterdir():
        if f.suffix == ".npz":
            f.write_bytes(b"not an npz archive")
    with pytest.warns(Warning, match="fell back"):
        fc = forecast("SYN-BTC", 7, source=SyntheticSource(seed=4, start="2019-01-01", end="2022-12-31"),
                      paths=500, seed=3, model="sota")
    used = {fb["kind"]: fb["used"] for fb in fc.metadata["fallbacks"]}
    assert used == {"volatility": "garch", "residuals": "student_t"}
    why = {fb["kind"]: fb["why"] for fb in fc.metadata["fallbacks"]}
    assert bad.version in why["volatility"] and "fm_gp" in why["residuals"]
    assert fc.metadata["components"]["trend"] == f"mamba@{good.version}"
    assert sum("fell back" in w for w in fc.metadata["warnings"]) == 2
    assert np.all(np.isfinite(fc.quantiles)) and np.all(np.diff(fc.quantiles, axis=-1) >= 0)
