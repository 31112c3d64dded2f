"""The sweep: windows -> Tuner (ASHA, val_ql min) -> best trial -> model registry.

Where it runs (`SweepOptions`: storage, trials, time budget, GPUs per trial) is
kept apart from what the model is (the component spec and its search space).
A sweep interrupted for any reason resumes with ``resume=True``
(``Tuner.can_restore`` / ``Tuner.restore(resume_errored=True)``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from aetheris_ray.errors import AetherisError, InvalidInput

__all__ = ["SweepOptions", "SweepResult", "run_sweep", "quiet_tune_env", "compare_with_latest"]

METRIC, MODE = "val_ql", "min"


def quiet_tune_env() -> None:
    """Environment that silences Tune's repeated checkpoint-sync warning and Ray's usage notice, token auth on (set before Tune starts)."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # never off: RAY_NOTES.md gotcha 5


@dataclass(frozen=True)
class SweepOptions:
    """Where and how long a sweep runs (never seen by the core).

    Attributes
    ----------
    storage_path : str       Tune's storage root (default ``$AETHERIS_HOME/tune``)
    name : str or None       experiment name (default ``<component>``; reused by ``resume``)
    num_samples : int        trials
    time_budget_s : float or None
    gpus_per_trial : float or None   None = 1 when the cluster has GPUs, else 0
    cpus_per_trial : float
    max_concurrent : int or None
    resume : bool            continue the experiment at storage_path/name when it can be restored
    force_promote : bool     make the new version ``latest`` even when it does not beat the current one
    grace_reports : int      ASHA grace period, in reports
    overrides : dict         fixed config entries (e.g. max_steps for a short run, test hooks)
    """

    storage_path: str | None = None
    name: str | None = None
    num_samples: int = 4
    time_budget_s: float | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    resume: bool = False
    grace_reports: int = 2
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    force_promote: bool = False


@dataclass(frozen=True)
class SweepResult:
    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    record: Any  # registry ModelRecord or None
    wall_s: float
    n_trials: int
    n_errored: int
    path: str
    device: str


def _storage(opts: SweepOptions) -> Path:
    if opts.storage_path:
        return Path(opts.storage_path).expanduser().resolve()
    from aetheris_ray.config import load_settings

    return (load_settings().home / "tune").resolve()


def compare_with_latest(component: str, spec: Any, windows: dict[str, np.ndarray], fitted: Any, registry: Any,
                        *, force: bool = False) -> dict[str, Any]:
    """Whether ``fitted`` may replace the registry's ``latest`` ``component``: both scored on the same validation windows.

    The spec's trainer on ``windows`` (the sweep's own, so its validation windows come after
    its training windows) scores the new part and the incumbent with ``trainer.score(fitted)``
    (`METRIC`, lower is better).  The new version is promoted only when it scores strictly
    better, or when there is nothing to compare with (no incumbent, an unusable one, a trainer
    without ``score``); ``force`` promotes it anyway and says so.  Returns the record's
    ``promotion`` dict (`aetheris_ray.registry.ModelRecord`).
    """
    from aetheris_ray.errors import ModelNotFound

    out: dict[str, Any] = {"metric": METRIC, "score": None, "incumbent": None, "incumbent_score": None}
    try:
        rec = registry.record(component)
        incumbent = registry.load(component, rec.version)
    except ModelNotFound as e:
        return dict(out, promoted=True, why=f"no usable incumbent ({e})")
    out["incumbent"] = rec.version
    trainer = spec.trainer(windows)
    if not hasattr(trainer, "score"):
        return dict(out, promoted=True, why=f"{component}'s trainer has no score(): not compared")
    new, old = float(trainer.score(fitted)[METRIC]), float(trainer.score(incumbent)[METRIC])
    out.update(score=new, incumbent_score=old)
    if not np.isfinite(new):
        return dict(out, promoted=bool(force), why="the new version's score is not finite")
    if not np.isfinite(old) or new < old:
        return dict(out, promoted=True, why=f"beats {rec.version} on the validation windows ({new:.5g} < {old:.5g})")
    if force:
        return dict(out, promoted=True, why=f"forced: does not beat {rec.version} ({new:.5g} >= {old:.5g})")
    return dict(out, promoted=False, why=f"does not beat {rec.version} ({new:.5g} >= {old:.5g}); {rec.version} stays latest")


def _gpus(opts: SweepOptions) -> float:
    import ray

    have = float(ray.cluster_resources().get("GPU", 0.0))
    want = opts.gpus_per_trial
    if want is None:
        return 1.0 if have >= 1 else 0.0
    if want < 0:
        raise InvalidInput(f"--gpus-per-trial {want}: must be >= 0")
    if want > have:
        raise InvalidInput(
            f"--gpus-per-trial {want}: the Ray cluster has {have:g} GPU(s); "
            "run on a GPU machine or pass --gpus-per-trial 0"
        )
    return float(want)


def run_sweep(
    component: str,
    windows: dict[str, np.ndarray],
    opts: SweepOptions = SweepOptions(),
    *,
    register: bool = True,
    registry: Any = None,
    extra_info: dict[str, Any] | None = None,
) -> SweepResult:
    """Tune ``component`` on ``windows``; register the best trial's model; returns a summary.

    Starts a local Ray (no dashboard) when none is running -- or connects to
    ``$RAY_ADDRESS`` when set (``ray job submit``) -- and disconnects at the end.
    """
    quiet_tune_env()
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tune.spaces import search_space
    from tune.trainables import MODEL_DIR, trainable as trainable_of

    train_fn = trainable_of(component)  # InvalidInput listing the tunable parts
    if opts.num_samples < 1:
        raise InvalidInput(f"--trials {opts.num_samples}: must be >= 1")
    t0 = time.perf_counter()
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # `ray job submit` / a cluster: connect, start nothing
            ray.init(log_to_driver=False, configure_logging=False)
        else:
            from aetheris_ray.distributed.serving import loopback_ray_env, require_ray_auth

            require_ray_auth()  # token auth on, and a local Ray on 127.0.0.1 only
            loopback_ray_env()
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        gpus = _gpus(opts)
        space = search_space(component, {"seed": opts.seed, "device": "cuda" if gpus > 0 else "cpu", **opts.overrides})
        per = int(space.get("steps_per_report", 25))
        max_reports = max(1, int(space.get("max_steps", 300)) // per)
        trainable = tune.with_resources(
            tune.with_parameters(train_fn, windows=windows),
            {"cpu": opts.cpus_per_trial, "gpu": gpus},
        )
        storage = _storage(opts)
        name = opts.name or component
        path = storage / name
        if opts.resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        else:
            if path.exists():
                name = f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
                path = storage / name
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=METRIC,
                    mode=MODE,
                    scheduler=ASHAScheduler(max_t=max_reports, grace_period=min(opts.grace_reports, max_reports), reduction_factor=2),
                    num_samples=opts.num_samples,
                    time_budget_s=opts.time_budget_s,
                    max_concurrent_trials=opts.max_concurrent,
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    verbose=0,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
        grid = tuner.fit()
        n_errored = sum(1 for r in grid if r.error is not None)
        try:
            best = grid.get_best_result(metric=METRIC, mode=MODE, scope="last", filter_nan_and_inf=True)
        except RuntimeError as e:
            raise AetherisError(f"tune: no trial reported {METRIC} ({n_errored} errored); see {path}") from e
        record = None
        ckpt = best.checkpoint
        if ckpt is None:  # the best last report carried no checkpoint: take the best checkpointed trial
            done = [r for r in grid if r.checkpoint is not None and r.metrics and np.isfinite(r.metrics.get(METRIC, np.nan))]
            if done:
                best = min(done, key=lambda r: r.metrics[METRIC])
                ckpt = best.checkpoint
        if register and ckpt is not None:
            from aetheris_ray.components.base import load_component
            from aetheris_ray.registry import Registry

            from tune.trainables import _spec_from_config

            with ckpt.as_directory() as d:
                fitted = load_component(Path(d) / MODEL_DIR)
            reg = registry if registry is not None else Registry()
            info = dict(fitted.info)
            promotion = compare_with_latest(component, _spec_from_config(best.config), windows, fitted, reg,
                                            force=opts.force_promote)
            record = reg.register(
                fitted,
                component=component,
                extra={"tune_experiment": str(path), "trial_id": best.metrics.get("trial_id"),
                       "assets": info.get("assets", []), **(extra_info or {})},
                promotion=promotion,
            )
        cfg = {k: v for k, v in (best.config or {}).items() if not k.startswith("_")}
        return SweepResult(
            best_config=cfg,
            best_metrics={k: v for k, v in best.metrics.items() if isinstance(v, (int, float))},
            record=record,
            wall_s=time.perf_counter() - t0,
            n_trials=len(grid),
            n_errored=n_errored,
            path=str(path),
            device="cuda" if gpus > 0 else "cpu",
        )
    finally:
        if started:
            ray.shutdown()
