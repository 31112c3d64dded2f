"""The engine never imports Ray: import the core with ``sys.modules["ray"] = None`` in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CORE = [
    "aetheris_ray", "aetheris_ray.api", "aetheris_ray.engine", "aetheris_ray.simulation", "aetheris_ray.contract",
    "aetheris_ray.result", "aetheris_ray.config", "aetheris_ray.errors", "aetheris_ray.quantiles", "aetheris_ray.data",
    "aetheris_ray.evaluation.backtest", "aetheris_ray.cli", "aetheris_ray.distributed",
    "aetheris_ray.distributed.budget", "deployments.auth", "aetheris_ray.outcomes",
]


@pytest.mark.slow
def test_core_imports_and_forecasts_without_ray():
    code = textwrap.dedent(f"""
        import importlib, sys
        sys.modules["ray"] = None  # any `import ray` now raises ImportError
        for name in {CORE!r}:
            importlib.import_module(name)
        from aetheris_ray.api import forecast
        fc = forecast("SYN-BTC", 3, synthetic=True, paths=200, seed=1)
        assert fc.quantiles.shape == (3, 7)
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules if sys.modules[m] is not None)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_only_distributed_imports_ray_at_module_level():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "aetheris_ray"
    offenders = []
    for p in root.rglob("*.py"):
        if "distributed" in p.parts:
            continue
        text = p.read_text(encoding="utf-8")
        if any(line.startswith(("import ray", "from ray ", "from ray.")) for line in text.splitlines()):
            offenders.append(str(p.relative_to(root)))
    assert offenders == [], f"modules outside aetheris_ray/distributed import ray: {offenders}"
