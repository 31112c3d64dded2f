"""A variant from another installed package: the example of docs/components.md, installed and used.

The module and entry point are taken from the docs page itself, written into a
temporary package with its ``*.dist-info/entry_points.txt`` (what ``pip install``
leaves), and found through the entry-point group ``aetheris_ray.components``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aetheris_ray.components import registry
from aetheris_ray.components.registry import names, reload_entry_points, unregister, variant
from aetheris_ray.errors import InvalidInput

DOC = Path(__file__).resolve().parents[2] / "docs" / "components.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def install_example(root: Path) -> Path:
    """Write the docs' plug-in (module + entry point) as an installed package under ``root``."""
    (module,) = [b for b in _blocks("python") if b.startswith("# aetheris_momentum/trend.py")]
    (toml,) = [b for b in _blocks("toml") if "aetheris_ray.components" in b]
    line = next(x for x in toml.splitlines() if "=" in x and not x.startswith("["))
    pkg = root / "aetheris_momentum"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "trend.py").write_text(module)
    info = root / "aetheris_momentum-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aetheris-momentum\nVersion: 0.1\n")
    name, _, target = line.partition("=")
    (info / "entry_points.txt").write_text(f"[aetheris_ray.components]\n{name.strip()} = {target.strip().strip(chr(34))}\n")
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    root = install_example(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    reload_entry_points()
    yield root
    unregister("trend", "momentum")
    monkeypatch.undo()
    for mod in [m for m in sys.modules if m.startswith("aetheris_momentum")]:
        del sys.modules[mod]
    reload_entry_points()


def test_entry_point_variant_is_found_by_name_and_fits_through_the_composer(plugin):
    from aetheris_ray.model import fit_model, model_config, resolve_config

    returns = 0.02 * np.random.default_rng(0).standard_normal(600) + 0.004
    assert "momentum" in names("trend")
    assert variant("trend", "momentum").source == "entry point momentum"
    cfg = resolve_config(model_config("baseline", ["trend=momentum"])[0])
    assert cfg.trend.name == "momentum" and cfg.name == "baseline+trend=momentum"
    model = fit_model(cfg, cfg.specs(), returns)
    trend = model.part("trend")
    assert type(trend).__name__ == "FittedMomentum" and 0.0 <= float(trend.params["shrink"][0]) <= 1.0


def test_plugin_is_gone_without_its_package(plugin):
    assert "momentum" in names("trend")
    unregister("trend", "momentum")
    assert "momentum" not in names("trend")
    with pytest.raises(InvalidInput, match="'momentum' is not registered"):
        variant("trend", "momentum")


def test_a_broken_plugin_warns_and_leaves_the_builtins_alone(tmp_path, monkeypatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[aetheris_ray.components]\nbad = no_such_module_xyz:VARIANT\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(RuntimeWarning, match="plug-in 'bad'"):
        reload_entry_points()
    assert "garch" in names("volatility")
    monkeypatch.undo()
    reload_entry_points()


def _cli(args: list[str], env_extra: dict[str, str]) -> dict:
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-m", "aetheris_ray", *args], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_cli_forecasts_with_the_installed_plugin(tmp_path):
    root = install_example(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "AETHERIS_HOME": str(tmp_path / "home")}
    base = ["forecast", "--synthetic", "--asset", "SYN-BTC", "--horizon", "7", "--paths", "500", "--seed", "3",
            "--format", "json"]
    plain = _cli(base, env)
    mom = _cli([*base, "--component", "trend=momentum"], env)
    assert plain["metadata"]["components"]["trend"] == "ar_es"
    assert mom["metadata"]["components"]["trend"] == "momentum"
    assert mom["model_version"].startswith("baseline+trend=momentum-")
    assert not np.allclose(mom["quantiles"]["q50"], plain["quantiles"]["q50"])
    bad = subprocess.run([sys.executable, "-m", "aetheris_ray", *base, "--component", "trend=momentun"],
                         capture_output=True, text=True, env=dict(os.environ, **env), timeout=600)
    assert bad.returncode == 2 and "valid names" in bad.stderr and "Traceback" not in bad.stderr


def test_registry_table_is_not_left_with_the_plugin():
    assert "momentum" not in registry.names("trend")
