"""Registry: round trip, versions, atomic refusal to overwrite, corrupt artifacts -> resolved to the fallback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aetheris_ray import registry as reg
from aetheris_ray.components.rough_vol import FittedRoughVol
from aetheris_ray.errors import FallbackWarning, InvalidInput, ModelNotFound
from aetheris_ray.features.state import MarketState

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def model():
    return FittedRoughVol.from_params(
        0.1, seed=1, lookback=16, hidden=8,
        info={"metrics": {"val_ql": 1.23}, "train_range": ["2020-01-01", "2021-12-31"]},
    )


def _state():
    r = 0.02 * np.random.default_rng(0).standard_normal(40)
    return MarketState("X", pd.Timestamp("2024-01-01"), 1.0, r, 0.0, 0.02, "normal", np.zeros(3))


def test_round_trip_and_listing(model, isolated_home):
    rec = reg.register_model(model, extra={"assets": ["BTC-USD"]})
    assert rec.path.startswith(str(isolated_home / "registry"))  # honours AETHERIS_HOME
    assert rec.version.startswith("rough_vol-") and rec.kind == "volatility"
    assert rec.metrics == {"val_ql": 1.23} and rec.train_range == ["2020-01-01", "2021-12-31"]
    assert rec.hyperparameters["lookback"] == 16 and rec.package_version and rec.code_version
    rows = reg.list_models()
    assert [r["version"] for r in rows] == [rec.version] and rows[0]["status"] == "ok"
    json.dumps(rows)  # JSON-ready for GET /v1/models
    back = reg.load("rough_vol")
    s = _state()
    np.testing.assert_array_equal(back.sample(s, 20, 3, np.random.default_rng(0)), model.sample(s, 20, 3, np.random.default_rng(0)))
    assert reg.load("rough_vol", rec.version).hurst == model.hurst


def test_latest_and_refuse_overwrite(model, tmp_path):
    r = reg.Registry(tmp_path)
    a = r.register(model, version="v1")
    b = r.register(model, version="v2")
    assert r.record("rough_vol").version == b.version
    with pytest.raises(InvalidInput, match="already exists"):
        r.register(model, version="v1")
    r.register(model, version="v1", overwrite=True)
    assert {x.version for x in r.list_models()} == {"v1", "v2"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    with pytest.raises(ModelNotFound, match="'v9' not found"):
        r.load("rough_vol", "v9")
    with pytest.raises(InvalidInput, match="version="):
        r.register(model, version="../evil")
    assert a.version == "v1"


def test_corrupt_artifact_falls_back_with_warning(model, tmp_path):
    r = reg.Registry(tmp_path)
    rec = r.register(model, version="good")
    (tmp_path / "good" / "model" / "shared.npz").write_bytes(b"garbage")
    with pytest.raises(ModelNotFound, match="corrupt"):
        r.load("rough_vol", "good")
    with pytest.warns(FallbackWarning, match="fell back"):
        out = reg.resolve_artefact("volatility", "rough_vol", rec.version, registry=r)
    assert out.version is None and out.fallback == "garch" and "corrupt" in out.why


def test_missing_and_unreadable_records_are_listed_not_raised(model, tmp_path):
    r = reg.Registry(tmp_path)
    r.register(model, version="ok1")
    (tmp_path / "broken").mkdir()
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "manifest.json").write_text("{not json")
    status = {x.version: x.status for x in r.list_models()}
    assert status["ok1"] == "ok" and status["broken"].startswith("corrupt") and status["badjson"].startswith("corrupt")
    assert r.record("rough_vol").version == "ok1"
    with pytest.warns(FallbackWarning):
        out = reg.resolve_artefact("volatility", "rough_vol", registry=reg.Registry(tmp_path / "empty"))
    assert out.fallback == "garch" and "no healthy" in out.why
    ok = reg.resolve_artefact("volatility", "rough_vol", registry=r)
    assert (ok.version, ok.fallback) == ("ok1", None)


def test_cli_models_lists_the_registry(model, isolated_home, capsys):
    from aetheris_ray.cli import main

    assert main(["models", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == []
    rec = reg.register_model(model)
    assert main(["models", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["registry"] == str(isolated_home / "registry")
    assert [m["version"] for m in out["models"]] == [rec.version]
    assert main(["models"]) == 0
    assert "rough_vol" in capsys.readouterr().out
    assert main(["models", "--format", "xml"]) == 2


def test_cli_start_up_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys\nfrom aetheris_ray.cli import app\n"
            "import aetheris_ray.cli.tune, aetheris_ray.cli.models\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, sorted(m for m in sys.modules if m in ('torch', 'ray'))\n")
    subprocess.run([sys.executable, "-c", code], check=True)
