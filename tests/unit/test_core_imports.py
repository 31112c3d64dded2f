"""The numpy core's unit tests import neither torch nor Ray: the fast unit tests are rerun under a guard.

`tests/unit/conftest.py` installs, when ``AETHERIS_FORBID_HEAVY=1``, an import hook that refuses
torch, ray, gpytorch and torchdiffeq (and fails the session if code under test swallowed the
error).  Tests that need torch are marked ``torch``, the unit tests of the Ray shells that import
ray are marked ``ray``; the rest must pass under the guard.
`test_no_ray_in_core.py` checks the other side: the *library* imports and forecasts without Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUARD = Path(__file__).with_name("conftest.py")


def _env() -> dict[str, str]:
    return {**os.environ, "AETHERIS_FORBID_HEAVY": "1"}


def test_the_guard_refuses_heavy_imports_even_when_caught():
    """Positive control: with the variable set, the conftest's hook makes ``import torch`` / ``import ray`` fail."""
    code = textwrap.dedent(f"""
        import importlib.util, runpy, sys
        ns = runpy.run_path({str(GUARD)!r})
        assert importlib.util.find_spec("torch") is not None  # probing for a backend is not importing it
        for name in ("torch", "ray", "torch.nn", "gpytorch", "torchdiffeq"):
            try:
                __import__(name)
            except ImportError as e:
                assert "numpy-core unit test" in str(e), e
            else:
                raise SystemExit(f"{{name}} was imported under the guard")
        assert len(ns["_attempts"]) == 5, ns["_attempts"]
        assert not any(m.partition(".")[0] in ("torch", "ray") for m in sys.modules)
        print("refused")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stdout[-2000:] + r.stderr[-3000:]


@pytest.mark.slow
def test_numpy_core_unit_tests_pass_without_torch_or_ray():
    if os.environ.get("AETHERIS_FORBID_HEAVY") == "1":
        pytest.skip("already inside the guarded run")
    cmd = [sys.executable, "-m", "pytest", "tests/unit", "-m", "not torch and not ray and not slow", "-p", "no:cacheprovider",
           "-q", "-rfE", "--no-header"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=_env(), cwd=REPO)
    assert r.returncode == 0, (
        "unit tests not marked `torch` failed with torch/ray imports forbidden (AETHERIS_FORBID_HEAVY=1); "
        "mark the ones that need torch with `pytestmark = pytest.mark.torch` (`ray` for ones that import ray):\n" + r.stdout[-6000:] + r.stderr[-4000:]
    )
