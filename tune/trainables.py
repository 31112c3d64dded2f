"""Tune trainables: thin loops around the core training step (unit tests cover the step without Tune).

``train_rough_vol(config, windows=...)`` is wrapped with ``tune.with_parameters``
(the windows travel once through the object store) and ``tune.with_resources``.
It reports ``val_ql`` (mode ``min``) after every ``steps_per_report`` steps and a
checkpoint (trainer state + the component saved by its own ``save``) every
``checkpoint_every`` reports and at the end; on restore it continues from the last
checkpoint with the same batch sequence.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_rough_vol", "TRAINABLES"]

STATE_FILE = "trainer.pt"
MODEL_DIR = "model"


def _spec_from_config(config: dict[str, Any]) -> Any:
    from aetheris_ray.components.rough_vol import RoughVolatility

    names = {f.name for f in fields(RoughVolatility)}
    return RoughVolatility(**{k: config[k] for k in names if k in config})


def train_rough_vol(config: dict[str, Any], windows: dict[str, np.ndarray] | None = None) -> None:
    """Tune trainable of ``rough_vol``.

    ``config`` holds `RoughVolatility` fields plus ``max_steps``, ``steps_per_report``,
    ``checkpoint_every``; ``_fail_at_step`` / ``_fail_marker`` are a fault-injection
    hook for the restore test (raise once, when ``step >= _fail_at_step`` and the
    marker file does not exist yet).
    """
    import torch
    from ray import tune

    from aetheris_ray.components.rough_vol.training import Trainer

    if windows is None:
        raise ValueError("train_rough_vol: pass the windows through tune.with_parameters(train_rough_vol, windows=...)")
    torch.set_num_threads(max(1, int(config.get("torch_threads", 1))))
    spec = _spec_from_config(config)
    trainer = Trainer(windows, spec)
    resumed_from = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / STATE_FILE, map_location=trainer.device, weights_only=True))
        resumed_from = trainer.step
    max_steps = int(config.get("max_steps", spec.max_steps))
    per = int(config.get("steps_per_report", 25))
    every = max(1, int(config.get("checkpoint_every", 4)))
    fail_at, marker = config.get("_fail_at_step"), config.get("_fail_marker")
    n_report = trainer.step // per
    while trainer.step < max_steps:
        loss = trainer.train(min(per, max_steps - trainer.step))
        n_report += 1
        if fail_at is not None and marker and trainer.step >= int(fail_at) and not os.path.exists(marker):
            Path(marker).touch()
            raise RuntimeError(f"injected failure at step {trainer.step}")
        metrics = dict(trainer.evaluate(), train_nll=loss, resumed_from=float(resumed_from))
        if n_report % every == 0 or trainer.step >= max_steps:
            with tempfile.TemporaryDirectory() as d:
                torch.save(trainer.state_dict(), Path(d) / STATE_FILE)
                trainer.fitted().save(Path(d) / MODEL_DIR)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:
            tune.report(metrics)


#: component -> trainable (the CLI and the sweep pick by name).
TRAINABLES = {"rough_vol": train_rough_vol}
