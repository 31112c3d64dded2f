"""One regime-label mapping: `regime_code` / `regime_codes` next to REGIME_LABELS, used everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from aetheris_ray.errors import InvalidInput
from aetheris_ray.features.state import REGIME_LABELS, regime_code, regime_codes

ROOT = Path(__file__).resolve().parents[3] / "aetheris_ray"


def test_codes_are_indices_in_regime_labels():
    assert [regime_code(x) for x in REGIME_LABELS] == [0, 1, 2, 3]
    assert regime_code(np.str_("crisis")) == 3
    codes = regime_codes(np.array([["calm", "normal"], ["volatile", "crisis"]]))
    assert codes.dtype == np.int64 and codes.tolist() == [[0, 1], [2, 3]]
    assert regime_codes([]).shape == (0,)
    assert regime_codes(("normal",) * 3).tolist() == [1, 1, 1]


@pytest.mark.parametrize("bad", ["bullish", "Normal", "", None, 1, ["calm"]])
def test_unknown_labels_raise_naming_the_label_and_the_valid_ones(bad):
    with pytest.raises(InvalidInput, match=re.escape(f"regime {bad!r} is not a known label; "
                                                     "valid: calm, normal, volatile, crisis")):
        regime_code(bad)


def test_regime_codes_raises_on_the_first_unknown_label():
    with pytest.raises(InvalidInput, match="regime 'sideways' is not a known label"):
        regime_codes(["calm", "sideways", "nope"])


def test_context_regime_codes_use_the_one_mapping():
    from aetheris_ray.components.base import Context

    r = 0.01 * np.random.default_rng(0).standard_normal(50)
    assert Context.from_returns(r, regime_label="volatile").regime_codes().tolist() == [2]
    with pytest.raises(InvalidInput, match="regime 'sideways' is not a known label"):
        Context.from_returns(r, regime_label="sideways").regime_codes()  # was silently 'normal'


def test_calibrator_uses_the_one_mapping():
    from aetheris_ray.calibration import Calibrator

    cal = Calibrator()
    cal.add(np.arange(10), 1, "crisis", np.linspace(0.05, 0.95, 10))
    cal.add(np.arange(10), 1, np.full(10, "calm"), np.linspace(0.05, 0.95, 10))
    assert sorted(cal.to_dict()["buckets"]["1"]["regime"]) == [0] * 10 + [3] * 10
    with pytest.raises(InvalidInput, match="regime 'sideways' is not a known label"):
        cal.add([1], 1, "sideways", [0.5])
    with pytest.raises(InvalidInput, match="regime 'sideways' is not a known label"):
        cal.level_map("sideways", 20)


def test_no_other_label_to_code_mapping_in_the_package():
    """Only features/state.py turns labels into codes."""
    pattern = re.compile(r"enumerate\(REGIME_LABELS\)|REGIME_LABELS\.index\(")
    offenders = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
                       if pattern.search(p.read_text(encoding="utf-8")))
    assert [p for p in offenders if p not in {"features/state.py"}] == []
