"""``aetheris score``: any model's export file scored from the prices alone, with or without the baselines."""

from __future__ import annotations

import pandas as pd
import pytest

from aetheris_ray.cli import main
from aetheris_ray.evaluation.backtest import SourceSpec, backtest
from aetheris_ray.evaluation.baselines import EwmaNormal, baseline_models

pytestmark = pytest.mark.filterwarnings("ignore::aetheris_ray.errors.DataQualityWarning")
START, END = "2022-04-01", "2022-08-31"


@pytest.fixture(scope="module")
def run(data_dir):
    """A backtest of a stand-in model (a slow EWMA named 'engine') with the baselines."""
    models = [EwmaNormal(name="engine", lam=0.97), *baseline_models()]
    return backtest(SourceSpec(data=str(data_dir)), ["AAA-USD", "GAP-USD", "USDT-USD"], START, END, [1, 7], models,
                    progress=False, workers=1)


def _score(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["score", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _pooled_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("| ") and not line.startswith("| model")]


@pytest.mark.slow
def test_one_model_with_baselines_reproduces_the_backtest(capsys, run, data_dir, tmp_path):
    """The model's rows alone (no model column, no y) plus --baselines give the run's pooled table exactly."""
    ex = run.export()
    mine = ex[ex.model == "engine"].drop(columns=["model", "y"])
    path = tmp_path / "engine.csv"
    mine.to_csv(path, index=False)
    report = tmp_path / "r.md"
    code, out, _ = _score(capsys, str(path), "--data", str(data_dir), "--baselines", "--workers", "1",
                          "--bootstrap", "200", "--report", str(report))
    assert code == 0
    from aetheris_ray.evaluation.report import markdown_table

    expected = markdown_table(run.pooled())
    assert _pooled_rows(out) == _pooled_rows(expected)
    assert "h=7: best baseline" in out and "engine QL" in out and "of resamples" in out
    md = report.read_text()
    assert "## Sampling uncertainty (block bootstrap)" in md and "## Per asset" in md


@pytest.mark.slow
def test_a_file_with_every_model_scores_as_the_run_and_skips_rows_without_prices(capsys, run, data_dir, tmp_path):
    ex = run.export()
    extra = ex[(ex.model == "engine")].head(3).copy()
    extra["origin"] = "2030-01-01"  # no prices then: left out and counted, the rest still scored
    path = tmp_path / "all.parquet"
    pd.concat([ex, extra]).to_parquet(path)
    code, out, _ = _score(capsys, str(path), "--data", str(data_dir), "--bootstrap", "0")
    assert code == 0
    assert "3 row(s) without a close at origin or target left out" in out
    from aetheris_ray.evaluation.report import markdown_table

    assert _pooled_rows(out) == _pooled_rows(markdown_table(run.pooled()))


@pytest.mark.slow
def test_the_files_own_y_is_not_trusted(capsys, run, data_dir, tmp_path):
    ex = run.export()
    ex["y"] = 0.0  # a wrong realised return in the file changes nothing
    path = tmp_path / "f.csv"
    ex.to_csv(path, index=False)
    code, out, _ = _score(capsys, str(path), "--data", str(data_dir), "--bootstrap", "0")
    from aetheris_ray.evaluation.report import markdown_table

    assert code == 0 and _pooled_rows(out) == _pooled_rows(markdown_table(run.pooled()))


@pytest.mark.parametrize("make, extra, message", [
    (None, [], "error: '{dir}/nope.csv' is not a file"),
    ("text", [], "error: '{dir}/f.csv' is not a readable forecast file"),
    ("nocols", [], "error: export: missing column(s) horizon"),
    ("badq", [], "error: export columns"),
    ("empty", [], "error: '{dir}/f.csv' holds no forecasts"),
    ("full", ["--baselines"], "error: f.csv already holds bootstrap, ewma_normal, garch_t rows"),
    ("full", ["--bootstrap", "10"], "error: --bootstrap 10: give at least 100 resamples"),
    ("unknown", [], "error: unknown asset 'ZZZ-USD'"),
    ("future", [], "error: f.csv: none of its"),
])
@pytest.mark.slow
def test_bad_files_get_one_line(capsys, run, data_dir, tmp_path, make, extra, message):
    path = tmp_path / ("nope.csv" if make is None else "f.csv")
    ex = run.export()
    if make == "text":
        path.write_bytes(b"\x00\x01 not a csv \xff\n\x00")
    elif make == "nocols":
        ex.drop(columns=["horizon"]).to_csv(path, index=False)
    elif make == "badq":
        ex.rename(columns={"q50": "median"}).to_csv(path, index=False)
    elif make == "empty":
        ex.iloc[:0].to_csv(path, index=False)
    elif make == "full":
        ex.to_csv(path, index=False)
    elif make == "future":
        ex.assign(origin="2031-05-05").to_csv(path, index=False)
    elif make == "unknown":
        ex.assign(asset="ZZZ-USD").to_csv(path, index=False)
    code, _, err = _score(capsys, str(path), "--data", str(data_dir), *extra)
    assert code in (2, 3)
    assert err.startswith(message.format(dir=tmp_path)) and err.count("\n") == 1, err


def test_data_is_required(capsys, tmp_path):
    code, _, err = _score(capsys, str(tmp_path / "f.csv"))
    assert code == 2 and err.startswith("error: --data DIR is required") and err.count("\n") == 1
