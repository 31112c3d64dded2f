"""The Tune trainable: one thin loop around any tunable part's core training step.

A variant is tunable when its registration (`aetheris_ray.components.registry.Variant`)
carries a search space; its spec's ``trainer(windows)`` returns the core training
loop (`aetheris_ray.components.contract.Trainer`), which unit tests cover without
Tune.  ``train_component(config, windows=...)`` is wrapped with ``tune.with_parameters``
(the windows travel once through the object store) and ``tune.with_resources``;
``config["component"]`` names the variant (``KIND/NAME``).
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

__all__ = ["train_component", "trainable"]

STATE_FILE = "trainer.pt"
MODEL_DIR = "model"


def _spec_from_config(config: dict[str, Any]) -> Any:
    """The variant's spec from a trial config (``component`` = ``KIND/NAME`` plus spec fields)."""
    from aetheris_ray.components.registry import spec_class

    kind, _, name = str(config["component"]).partition("/")
    cls = spec_class(kind, name)
    names = {f.name for f in fields(cls)}
    return cls(**{k: config[k] for k in names if k in config})


def train_component(config: dict[str, Any], windows: dict[str, np.ndarray] | None = None) -> None:
    """The Tune trainable of every tunable part.

    ``config`` holds ``component`` (``KIND/NAME``), the spec's fields, plus ``max_steps``, ``steps_per_report``,
    ``checkpoint_every``; ``_fail_at_step`` / ``_fail_marker`` are a fault-injection
    hook for the restore test (raise once, when ``step >= _fail_at_step`` and the
    marker file does not exist yet).
    """
    import torch
    from ray import tune

    if windows is None:
        raise ValueError("train_component: pass the windows through tune.with_parameters(train_component, windows=...)")
    torch.set_num_threads(max(1, int(config.get("torch_threads", 1))))
    spec = _spec_from_config(config)
    trainer = spec.trainer(windows)
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


def trainable(component: str) -> Any:
    """The trainable of a tunable variant (`InvalidInput` listing the tunable ones)."""
    from aetheris_ray.components.registry import tunable

    tunable(component)
    return train_component
