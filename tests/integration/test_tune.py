"""Ray Tune: a short sweep registers its best trial; a killed sweep restores and finishes from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from aetheris_ray.data.synthetic import SyntheticSource
from aetheris_ray.registry import Registry
from aetheris_ray.windows import WindowSpec, concat_windows, make_windows

pytestmark = pytest.mark.integration
SMALL = {"max_steps": 40, "steps_per_report": 10, "checkpoint_every": 2, "lookback": 32, "hidden": 8}


@pytest.fixture(scope="module")
def windows():
    spec = WindowSpec(lookback=32, horizon=7, stride=3)
    src = SyntheticSource(seed=2, start="2019-01-01", end="2022-12-31")
    return concat_windows([make_windows(src.history(a), spec) for a in src.assets()], spec)


def test_sweep_registers_the_best_trial(ray_session, windows, tmp_path):
    from tune.sweep import SweepOptions, run_sweep

    reg = Registry(tmp_path / "registry")
    opts = SweepOptions(storage_path=str(tmp_path / "tune"), num_samples=2, gpus_per_trial=0, cpus_per_trial=1,
                        overrides=SMALL)
    res = run_sweep("rough_vol", windows, opts, registry=reg)
    assert res.n_trials == 2 and res.n_errored == 0 and res.device == "cpu"
    assert np.isfinite(res.best_metrics["val_ql"])
    rec = res.record
    assert rec is not None and rec.component == "rough_vol" and rec.metrics["val_ql"] > 0
    model = reg.load("rough_vol", rec.version)
    assert model.info["steps"] == res.best_metrics["step"]
    assert not (tmp_path / "ray_results").exists()


def test_restore_continues_a_killed_sweep_from_its_checkpoint(ray_session, windows, tmp_path):
    from ray import tune

    from tune.sweep import SweepOptions, run_sweep

    marker = tmp_path / "failed_once"
    over = dict(SMALL, max_steps=60, _fail_at_step=40, _fail_marker=str(marker))
    opts = SweepOptions(storage_path=str(tmp_path / "tune"), name="killed", num_samples=1, gpus_per_trial=0,
                        overrides=over)
    first = run_sweep("rough_vol", windows, opts, register=False)
    assert marker.exists() and first.n_errored == 1
    assert first.best_metrics["step"] == 30  # last report before the failure; checkpoint at step 20
    assert tune.Tuner.can_restore(str(tmp_path / "tune" / "killed"))
    again = run_sweep("rough_vol", windows, SweepOptions(**{**opts.__dict__, "resume": True}),
                      registry=Registry(tmp_path / "registry"))
    assert again.n_errored == 0
    assert again.best_metrics["step"] == 60
    assert again.best_metrics["resumed_from"] == 20  # continued from the checkpoint, not from scratch
    assert again.record is not None
