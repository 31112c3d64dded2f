"""Batch backtest on Ray: assets x blocks of origin days as Ray tasks, merged per asset, equal to in-process.

The in-process runs are plain subprocesses with one BLAS thread, as Ray gives its
workers: the GARCH fits differ in the last bits with OpenBLAS's thread setting.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")

IN_PROCESS = """
import sys
import pandas as pd
from aetheris_ray.evaluation.backtest import SourceSpec, backtest
sys.path.insert(0, sys.argv[1])
from test_backtest_ray import models
spec = SourceSpec(synthetic=True, seed=0)
end = spec.open().history("SYN-BTC").daily_close().index[-1]
res = backtest(spec, ["SYN-BTC", "SYN-ETH"], end - pd.Timedelta(days=40), end, [1, 7], models(), progress=False,
               workers=1)
res.export().to_parquet(sys.argv[2] + "/export.parquet")
res.counts.to_parquet(sys.argv[2] + "/counts.parquet")
res.per_asset().to_parquet(sys.argv[2] + "/per_asset.parquet")
"""


def models() -> list:
    """A small engine (few paths, short calibration window) and the three baselines."""
    from aetheris_ray.calibration import CalibrationConfig
    from aetheris_ray.model import EngineConfig
    from aetheris_ray.evaluation.baselines import baseline_models
    from aetheris_ray.walkforward import EngineModel

    cfg = EngineConfig(walkforward_paths=200, calibration=CalibrationConfig(window_days=60))
    return [EngineModel(cfg, seed=3), *baseline_models()]


def test_backtest_on_ray_over_blocks_equals_in_process(ray_session, tmp_path):
    """Three blocks of origins per asset (two assets: six block tasks, two merge tasks) == one in-process run."""
    from pathlib import Path

    from aetheris_ray.distributed.backtest import backtest_ray, write_parquet
    from aetheris_ray.evaluation.backtest import SourceSpec, origin_blocks

    spec = SourceSpec(synthetic=True, seed=0)
    end = spec.open().history("SYN-BTC").daily_close().index[-1]
    start = end - pd.Timedelta(days=40)
    assert len(origin_blocks(start, end, [1, 7], 15)) == 3
    r = subprocess.run([sys.executable, "-c", IN_PROCESS, str(Path(__file__).parent), str(tmp_path)],
                       capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    local = {k: pd.read_parquet(tmp_path / f"{k}.parquet") for k in ("export", "counts", "per_asset")}
    dist = backtest_ray(spec, ["SYN-BTC", "SYN-ETH"], start, end, [1, 7], models(), block_days=15,
                        task_num_cpus=0.25)
    assert set(local["export"]["model"]) == {"engine", "ewma_normal", "garch_t", "bootstrap"}
    pd.testing.assert_frame_equal(dist.export(), local["export"], check_exact=True)
    pd.testing.assert_frame_equal(dist.counts, local["counts"], check_exact=True)
    pd.testing.assert_frame_equal(dist.per_asset(), local["per_asset"], check_exact=True)
    path = write_parquet(dist, tmp_path / "scores.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), local["export"], check_exact=True)


def test_cli_backtest_ray_on_real_data_equals_in_process(ray_session, shared_data, tmp_path):
    """``aetheris backtest --ray --block-days 15`` (three blocks per asset) on two real assets, the engine
    and the baselines writes the same Parquet as the in-process run."""
    from aetheris_ray.cli import main

    common = ["backtest", "--data", str(shared_data), "--assets", "BTC-USD,ETH-USD", "--start", "2024-09-01",
              "--end", "2024-10-15", "--horizons", "1,7", "--model", "baseline", "--baselines", "--no-progress"]
    cli = "import sys; from aetheris_ray.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", cli, *common, "--workers", "1", "--out", str(tmp_path / "local.parquet")],
                       capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert main(common + ["--ray", "--block-days", "15", "--out", str(tmp_path / "ray.parquet")]) == 0
    local = pd.read_parquet(tmp_path / "local.parquet")
    dist = pd.read_parquet(tmp_path / "ray.parquet")
    assert len(local) > 0 and set(local["asset"]) == {"BTC-USD", "ETH-USD"}
    assert set(local["model"]) == {"engine", "ewma_normal", "garch_t", "bootstrap"}
    pd.testing.assert_frame_equal(dist, local, check_exact=True)
