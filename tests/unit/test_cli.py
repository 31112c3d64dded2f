"""The `aetheris` command line: real commands on real files, one readable error line each."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from aetheris_ray.cli import main

AETHERIS = [sys.executable, "-m", "aetheris_ray"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    assert main(["ingest", "--synthetic", "--store", str(store)]) == 0
    return store


def test_help_on_every_command(capsys):
    for cmd in ([], ["forecast"], ["ingest"], ["backtest"], ["serve"], ["tune"], ["models"]):
        code, out, _ = run(capsys, *cmd, "--help")
        assert code == 0 and "Usage: " in out


@pytest.mark.slow
def test_forecast_json_on_real_data(capsys, shared_data):
    code, out, err = run(
        capsys, "forecast", "--data", str(shared_data), "--asset", "BTC-USD", "--horizon", "7",
        "--paths", "1000", "--format", "json", "--threshold", "90000", "--seed", "3",
    )
    assert code == 0, err
    fc = json.loads(out)
    assert fc["asset"] == "BTC-USD" and fc["as_of"] == "2024-12-09" and fc["horizons"] == list(range(1, 8))
    q = np.array([fc["quantiles"][k] for k in ["q05", "q10", "q25", "q50", "q75", "q90", "q95"]])
    assert np.all(np.diff(q, axis=0) > 0), "quantiles must increase with the level at every step"
    (th,) = fc["thresholds"]
    assert th["p_below"] + th["p_above"] == pytest.approx(1.0)
    assert fc["seed"] == 3 and fc["model_version"] and fc["calibration_version"]


@pytest.mark.slow
def test_forecast_csv_is_the_export_format(capsys, synthetic_store):
    code, out, err = run(capsys, "forecast", "--store", str(synthetic_store), "--asset", "SYN-ETH", "--horizon", "3",
                         "--paths", "500", "--format", "csv", "--quantiles", "0.1,0.5,0.9", "--seed", "1")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "asset,origin,horizon,q10,q50,q90"
    assert [ln.split(",")[2] for ln in lines[1:]] == ["1", "2", "3"]


@pytest.mark.slow
def test_seed_reproduces(capsys, synthetic_store):
    args = ["forecast", "--store", str(synthetic_store), "--asset", "SYN-BTC", "--horizon", "5", "--paths", "300",
            "--format", "json", "--seed", "42"]
    first = run(capsys, *args)[1]
    assert run(capsys, *args)[1] == first


def test_table_and_plot(capsys, synthetic_store, tmp_path):
    png = tmp_path / "fan.png"
    code, out, err = run(capsys, "forecast", "--store", str(synthetic_store), "--asset", "SYN-BTC", "--horizon", "7",
                         "--paths", "500", "--plot", str(png))
    assert code == 0, err
    assert "SYN-BTC" in out and "q95" in out
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["forecast", "--asset", "NOPE-USD", "--synthetic"], 3, r"^error: unknown asset 'NOPE-USD'"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--horizon", "91"], 2, r"^error: horizon: .*less than or equal to 90"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--paths", "5"], 2, r"^error: paths: .*greater than or equal to 100"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--quantiles", "0.9,0.1"], 2, r"^error: quantiles: .*strictly increasing"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--as-of", "2025-06-01"], 3, r"^error: as_of 2025-06-01: the newest SYN-BTC close"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--as-of", "2999-01-01"], 2, r"^error: as_of: 2999-01-01 is outside 2009-01-03"),
        (["forecast", "--asset", "SYN-BTC", "--synthetic", "--scenario", "iv_level"], 2, r"^error: --scenario 'iv_level': expected KEY=NUMBER"),
        (["forecast", "--asset", "SYN-BTC"], 3, r"^error: the store at .* holds no assets: run `aetheris ingest"),
        (["forecast", "--asset", "SYN-BTC", "--data", "/nonexistent/dir"], None, r"^error: .*/nonexistent/dir"),
        (["ingest"], 2, r"^error: ingest: give exactly one of --data DIR or --synthetic"),
    ],
)
def test_errors_are_one_line(capsys, argv, code, message):
    rc, out, err = run(capsys, *argv)
    assert rc != 0 and (code is None or rc == code)
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1, err
    assert __import__("re").search(message, lines[0]), lines[0]



@pytest.mark.parametrize("argv, message", [
    (["forecast", "--bogus"], "No such option: --bogus"),
    (["forecast", "--asset", "SYN-BTC", "--synthetic", "--format", "xml"], "Invalid value for '--format'"),
    (["serve", "--proxy", "nginx"], "Invalid value for '--proxy'"),
])
def test_usage_errors_exit_2_with_the_option_named(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "internal error" not in err and "Traceback" not in err


@pytest.mark.slow
def test_console_script_entry_point(tmp_path):
    proc = subprocess.run([*AETHERIS, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "forecast" in proc.stdout
    proc = subprocess.run([*AETHERIS, "forecast", "--asset", "X", "--synthetic", "--horizon", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: horizon:") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_forecast_table_shows_the_scenario_effect(capsys, synthetic_store):
    code, out, err = run(capsys, "forecast", "--store", str(synthetic_store), "--asset", "SYN-BTC", "--horizon", "3",
                         "--paths", "500", "--seed", "1", "--scenario", "iv_level=150", "--scenario", "skew=-0.2")
    assert code == 0, err
    assert "[CONDITIONAL scenario]" in out
    assert "scenario volatility multiplier: 1d x" in out and "implied_vol " in out and "(data)" in out
    assert "note: scenario skew: no estimated effect on the cone" in " ".join(out.split())


@pytest.mark.slow
def test_forecast_explain_table_shows_drivers_not_dicts(capsys, synthetic_store):
    code, out, err = run(capsys, "forecast", "--store", str(synthetic_store), "--asset", "SYN-BTC", "--horizon", "7",
                         "--paths", "500", "--seed", "1", "--explain", "--format", "table")
    assert code == 0, err
    assert "{" not in out and "}" not in out and "'driver'" not in out, out
    from aetheris_ray.explain import BLOCKS

    for target in ("upside risk (q95 - q50)", "downside risk (q50 - q05)", "trend (q50)"):
        assert target in out
    from aetheris_ray.explain_ig import BLOCKS as IG_BLOCKS

    tail = out[out.index("drivers (integrated_gradients)"):]  # the default model is differentiable
    rows = [ln for ln in tail.splitlines() if " %" in ln]
    assert 3 <= len(rows) <= 9  # up to 3 drivers x 3 targets, each with its importance
    assert all(any(f" {b} " in ln for b in IG_BLOCKS) for ln in rows) and all("raises it" in ln or "lowers it" in ln
                                                                              for ln in rows)
    assert "within tolerance: yes" in " ".join(out.split())
    # a model without a torch expression (Poisson jumps) explains with the surrogate and says so
    code, out, err = run(capsys, "forecast", "--store", str(synthetic_store), "--asset", "SYN-BTC", "--horizon", "7",
                         "--paths", "500", "--seed", "1", "--explain", "--format", "table", "--component",
                         "jumps=poisson")
    assert code == 0, err
    tail = out[out.index("drivers (surrogate)"):]
    rows = [ln for ln in tail.splitlines() if " %" in ln]
    assert "integrated gradients unavailable" in " ".join(out.split())
    assert len(rows) == 9 and all(any(f" {b} " in ln for b in BLOCKS) for ln in rows)
    assert "surrogate fit R^2: upside 0." in out


def test_tune_all_names_every_tunable_part_and_unknown_names_are_refused():
    from aetheris_ray.cli.tune import _components
    from aetheris_ray.components.registry import tunable
    from aetheris_ray.errors import InvalidInput

    every = _components("all")
    assert every == [v.name for v in tunable()]
    assert {"rough_vol", "fm_gp", "mamba", "jump_sde", "ncc"} <= set(every)
    assert _components("mamba") == ["mamba"]
    with pytest.raises(InvalidInput, match="component 'garch' is not tunable; tunable components: .*fm_gp"):
        _components("garch")
    # a part that does not train on price windows names its builder (ncc: calibration pairs)
    assert tunable("ncc").training["windows_from"].endswith(":walk_forward_windows")
