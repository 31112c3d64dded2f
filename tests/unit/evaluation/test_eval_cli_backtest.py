"""``aetheris backtest``: one-line errors with non-zero exit codes; a small run end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aetheris_ray.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["backtest", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, code, message", [
    (["--start", "2022-13-01", "--end", "2022-09-30"], 2, "error: start '2022-13-01' is not a date; use YYYY-MM-DD"),
    (["--start", "2022-09-30", "--end", "2022-03-01"], 2, "error: start 2022-09-30 must be before end 2022-03-01"),
    (["--assets", "AAA-USD,NOPE-USD"], 3, "error: unknown asset 'NOPE-USD': not in the data source"),
    (["--horizons", "1,x,7"], 2, "error: --horizons '1,x,7': 'x' is not a whole number of days from 1 to 90"),
    (["--horizons", "0"], 2, "error: --horizons '0': '0' is not a whole number of days"),
    (["--model", "nope"], 2, "error: --model 'nope' is not known; valid: baseline"),
    (["--model", "none"], 2, "error: nothing to backtest: --model none leaves no engine model; add --baselines"),
    (["--model", "none,baseline"], 2, "error: --model 'none,baseline': 'none' (no engine model) cannot be combined"),
    (["--out", "/no/such/folder/f.csv"], 2,
     "error: --out '/no/such/folder/f.csv': the folder '/no/such/folder' does not exist"),
    (["--block-days", "90"], 2, "error: --block-days splits the work of a Ray run: add --ray (or --address)"),
    (["--ray", "--block-days", "-5"], 2, "error: --block-days -5: give a number of days, e.g. 180, or 0 for one"),
])
def test_errors_are_one_line(capsys, data_dir, args, code, message):
    base = {"--data": str(data_dir), "--assets": "AAA-USD", "--start": "2022-03-01", "--end": "2022-09-30"}
    argv: list[str] = []
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    flags = list(args)
    if "--model" not in args:
        flags.append("--baselines")
    got, out, err = _run(capsys, *argv, *flags, "--no-progress", "--workers", "1")
    assert got == code
    assert err.startswith(message) and err.count("\n") == 1, err


def test_missing_data_dir(capsys, tmp_path):
    got, _, err = _run(capsys, "--data", str(tmp_path / "nope"), "--start", "2022-01-01", "--end", "2022-02-01",
                       "--baselines")
    assert got == 2 and err.startswith(f"error: --data '{tmp_path / 'nope'}' does not exist") and err.count("\n") == 1


def test_small_run_writes_forecasts_and_report(capsys, data_dir, tmp_path):
    out, report = tmp_path / "f.parquet", tmp_path / "r.md"
    got, stdout, _ = _run(capsys, "--data", str(data_dir), "--assets", "AAA-USD,USDT-USD", "--start", "2022-06-01",
                          "--end", "2022-08-31", "--horizons", "1,7", "--baselines", "--out", str(out), "--report",
                          str(report), "--model", "none", "--workers", "1", "--no-progress")
    assert got == 0
    assert "2/2 assets scored" in stdout and "| QL x100 | cov50 % |" in stdout and "h=7: best baseline" in stdout
    ex = pd.read_parquet(out)
    assert set(ex["model"]) == {"ewma_normal", "garch_t", "bootstrap"} and set(ex["asset"]) == {"AAA-USD", "USDT-USD"}
    assert report.read_text().startswith("# Walk-forward backtest")


@pytest.mark.slow
def test_console_script_exit_code(data_dir):
    exe = Path(sys.executable).with_name("aetheris")
    if not exe.exists():
        pytest.skip("console script not installed")
    p = subprocess.run([str(exe), "backtest", "--data", str(data_dir), "--assets", "ZZZ-USD", "--start", "2022-01-01",
                        "--end", "2022-03-01", "--baselines"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3
    assert p.stderr.startswith("error: unknown asset 'ZZZ-USD'") and p.stderr.count("\n") == 1


def test_model_baseline_is_the_engine_first():
    from aetheris_ray.cli.backtest import build_models

    from aetheris_ray import walkforward
    models = build_models("baseline", True)
    assert isinstance(models[0], walkforward.EngineModel)
    assert [m.name for m in models[1:]] == ["ewma_normal", "garch_t", "bootstrap"]


def test_several_engine_models_by_name(isolated_home):
    from aetheris_ray.cli.backtest import build_models
    from aetheris_ray.errors import FallbackWarning
    from aetheris_ray.model import PRESETS

    with pytest.warns(FallbackWarning, match="rough_vol@latest unavailable"):
        models = build_models("baseline, rough_vol,baseline", False)
    assert [m.name for m in models] == ["engine", "engine_rough_vol"]
    assert models[0].config == PRESETS["baseline"].model_copy(update={"resolved": True})
    # resolved once on the driver: no registered rough_vol in this home, so every block uses the GARCH fallback
    rv = models[1].config
    assert rv.resolved and rv.volatility.name == "garch" and rv.fallbacks[0].wanted == "rough_vol@latest"


def test_component_swaps_a_part_of_every_engine_model(isolated_home):
    from aetheris_ray.api import backtest_models
    from aetheris_ray.cli import main

    (m,) = backtest_models("baseline", False, components=["trend=zero", "residuals=gaussian"])
    assert m.name == "engine_baseline+trend=zero,residuals=gaussian"
    assert (m.config.trend.name, m.config.residuals.name, m.config.volatility.name) == ("zero", "gaussian", "blend")
    assert main(["backtest", "--synthetic", "--start", "2024-10-01", "--end", "2024-11-30",
                 "--component", "trend=nope"]) == 2
    assert main(["backtest", "--synthetic", "--start", "2024-10-01", "--end", "2024-11-30",
                 "--component", "paths"]) == 2
