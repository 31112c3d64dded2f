"""``aetheris backtest`` without ``--model`` scores the default model; ``from aetheris_ray import backtest``
runs the same core and gives the same numbers (issue 13)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from aetheris_ray.cli import app, main

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")

PERIOD = ["--assets", "SYN-BTC", "--start", "2024-12-01", "--end", "2024-12-31", "--horizons", "1,7"]
FAST = ["--workers", "1", "--no-progress", "--bootstrap", "0"]


def _backtest_in_home(home, *args: str) -> tuple[str, pd.DataFrame]:
    """Run ``aetheris backtest`` (on the home store) with ``AETHERIS_HOME=home``; stdout and the export."""
    out = home / f"export{len(list(home.glob('export*')))}.parquet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHERIS_HOME", str(home))
        for var in ("AETHERIS_CONFIG", "AETHERIS_MODEL", "AETHERIS_STORE"):
            mp.delenv(var, raising=False)
        r = CliRunner().invoke(app, ["backtest", *PERIOD, *FAST, "--out", str(out), *args])
    assert r.exit_code == 0, (r.output, r.exception)
    return r.stdout, pd.read_parquet(out)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An AETHERIS_HOME whose store holds the synthetic market (``aetheris ingest --synthetic``)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AETHERIS_HOME", str(home))
        r = CliRunner().invoke(app, ["ingest", "--synthetic"])
    assert r.exit_code == 0, r.output
    return home


@pytest.fixture(scope="module")
def default_run(home):
    """``aetheris backtest`` with no ``--model`` and no ``--data`` (the home store)."""
    return _backtest_in_home(home)


@pytest.mark.slow
def test_backtest_without_model_scores_the_default_engine_model(default_run):
    stdout, export = default_run
    assert "models engine," in stdout and re.search(r"^\| engine +\| +1 \|", stdout, re.M), stdout
    assert set(export["model"]) == {"engine"} and set(export["asset"]) == {"SYN-BTC"}
    assert sorted(export["horizon"].unique()) == [1, 7] and len(export) == 30 + 24


@pytest.mark.slow
def test_model_omitted_is_model_baseline(home, default_run):
    stdout, export = _backtest_in_home(home, "--model", "baseline")
    pd.testing.assert_frame_equal(export, default_run[1])
    def pooled(text: str) -> str:
        return text.split("pooled", 1)[1].split("forecasts:", 1)[0]

    assert pooled(stdout) == pooled(default_run[0]) and "engine" in pooled(stdout)


def test_default_model_follows_the_settings(capsys, monkeypatch):
    monkeypatch.setenv("AETHERIS_MODEL", "nope")
    code = main(["backtest", "--synthetic", *PERIOD, *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: settings model (AETHERIS_MODEL) 'nope' is not known; valid: baseline")
    from aetheris_ray import backtest
    from aetheris_ray.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"settings model \(AETHERIS_MODEL\) 'nope' is not known"):
        backtest("SYN-BTC", "2024-12-01", "2024-12-31", [1], synthetic=True, workers=1)


def test_model_none_runs_the_baselines_alone(capsys):
    code = main(["backtest", "--synthetic", *PERIOD, *FAST, "--model", "none", "--baselines"])
    out = capsys.readouterr().out
    assert code == 0 and "models ewma_normal, garch_t, bootstrap," in out and "engine" not in out


@pytest.mark.slow
def test_python_backtest_gives_the_cli_numbers(home, default_run, monkeypatch):
    from aetheris_ray import BacktestResult, backtest
    from aetheris_ray.evaluation.report import markdown_table

    monkeypatch.setenv("AETHERIS_HOME", str(home))
    res = backtest("SYN-BTC", "2024-12-01", "2024-12-31", [1, 7], workers=1, progress=False)  # data=None: the store
    assert isinstance(res, BacktestResult) and res.models == ("engine",)
    stdout, export = default_run
    assert markdown_table(res.pooled()) in stdout
    frame = res.to_frame()
    assert list(frame.columns) == list(export.columns)
    pd.testing.assert_frame_equal(frame, export, check_dtype=False)
    # a CSV folder, the synthetic connector and the store are the same data
    same = backtest("SYN-BTC", "2024-12-01", "2024-12-31", "1,7", synthetic=True, workers=1, progress=False)
    pd.testing.assert_frame_equal(same.pooled(), res.pooled())


def test_python_backtest_errors_name_the_argument(tmp_path):
    from aetheris_ray import backtest
    from aetheris_ray.errors import DataError, InvalidInput

    with pytest.raises(InvalidInput, match=r"--data '.*nope' does not exist"):
        backtest("all", "2024-01-01", "2024-12-31", data=tmp_path / "nope", baselines=True)
    with pytest.raises(DataError, match=r"holds no assets: run `aetheris ingest"):
        backtest("all", "2024-01-01", "2024-12-31", baselines=True)  # the empty home store
    with pytest.raises(InvalidInput, match="nothing to backtest"):
        backtest("SYN-BTC", "2024-01-01", "2024-12-31", synthetic=True, model="none")


@pytest.mark.slow
def test_backtest_is_public_and_importing_it_stays_cheap():
    import aetheris_ray

    assert "backtest" in aetheris_ray.__all__ and "BacktestResult" in aetheris_ray.__all__
    code = textwrap.dedent("""
        import sys
        from aetheris_ray import backtest, forecast
        from aetheris_ray.api import backtest as same
        assert backtest is same
        heavy = [m for m in ("ray", "torch", "ccxt", "arch", "aetheris_ray.engine") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
