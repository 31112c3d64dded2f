"""Batch backtest on Ray: the harness's per-asset function as Ray tasks, equal to in-process."""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_backtest_on_ray_equals_in_process(ray_session, tmp_path):
    from aetheris_ray.distributed.backtest import backtest_ray, write_parquet
    from aetheris_ray.evaluation.backtest import SourceSpec, backtest
    from aetheris_ray.evaluation.baselines import baseline_models

    spec = SourceSpec(synthetic=True, seed=0)
    src = spec.open()
    close = src.history("SYN-BTC").daily_close()
    end = close.index[-1]
    start = end - pd.Timedelta(days=40)
    args = (spec, ["SYN-BTC", "SYN-ETH"], start, end, [1, 7])
    models = baseline_models()[:1]
    local = backtest(*args, models, progress=False, workers=1)
    dist = backtest_ray(*args, models, task_num_cpus=0.25)
    assert not local.frame.empty
    pd.testing.assert_frame_equal(dist.export(), local.export(), check_exact=True)
    pd.testing.assert_frame_equal(dist.counts, local.counts, check_exact=True)
    assert dist.metrics.keys() == local.metrics.keys()
    for k in local.metrics:
        assert dist.metrics[k].count == local.metrics[k].count
    pd.testing.assert_frame_equal(dist.per_asset(), local.per_asset(), check_exact=True)
    path = write_parquet(dist, tmp_path / "scores.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), local.export(), check_exact=True)


def test_cli_backtest_ray_on_real_data_equals_in_process(ray_session, shared_data, tmp_path):
    """``aetheris backtest --ray`` on two real assets and a short period writes the same Parquet as in-process.

    The in-process run is a plain subprocess with one BLAS thread, as Ray gives its
    workers: the GARCH fit differs in the last bits with OpenBLAS's thread setting.
    """
    import os
    import subprocess
    import sys

    from aetheris_ray.cli import main

    common = ["backtest", "--data", str(shared_data), "--assets", "BTC-USD,ETH-USD", "--start", "2024-09-01",
              "--end", "2024-10-15", "--horizons", "1,7", "--baselines", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", "import sys; from aetheris_ray.cli import main; sys.exit(main(sys.argv[1:]))",
                        *common, "--workers", "1", "--out", str(tmp_path / "local.parquet")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert main(common + ["--ray", "--out", str(tmp_path / "ray.parquet")]) == 0
    local = pd.read_parquet(tmp_path / "local.parquet")
    dist = pd.read_parquet(tmp_path / "ray.parquet")
    assert len(local) > 0 and set(local["asset"]) == {"BTC-USD", "ETH-USD"}
    pd.testing.assert_frame_equal(dist, local, check_exact=True)
