"""The model at one origin, cached: fitted parts, calibration buffers and the market state.

`origin_state` is the model layer of a forecast: what the walk-forward over the
asset's recent past leaves at the origin (`aetheris_ray.walkforward`), kept in an
in-process LRU and on disk under ``<state>/engine/<asset>/<key>/`` (``fitted/`` +
``calibration.json``, written atomically).  The key hashes the data seen, the
resolved model version (so a newly registered artefact, or one falling back, never
reuses another's entry) and the walk-forward algorithm.

Scenario sensitivities (`aetheris_ray.sensitivity`) are cached here too: they
depend on the data at the origin only.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aetheris_ray import atomic
from aetheris_ray.calibration import Calibrator
from aetheris_ray.data.schema import AssetData
from aetheris_ray.errors import DataError, ModelNotFound
from aetheris_ray.model import EngineConfig, FittedModel

__all__ = ["OriginState", "Lru", "origin_state", "sensitivities", "clear_caches", "state_dir"]


@dataclass
class OriginState:
    """The fitted model (batch 1) and calibration buffers at an origin, its market state and conditioning."""

    fitted: FittedModel
    calibrator: Calibrator
    state: Any
    cond: dict | None = None
    #: The entry's folder on disk (``<state>/engine/<asset>/<key>``), None when not kept on disk.
    disk: Path | None = None

    def conditioning(self, lookback: int) -> dict:
        """The unconditional (no scenario) conditioning arrays, computed once.

        Also kept next to the entry on disk as ``cond-<hash of the context>.npz``: the
        fitted parts are the entry's, so the context's content decides the arrays.  A
        new process then skips the parts' filters, and the scipy.signal import they
        need (about half of a warm ``aetheris forecast`` process).
        """
        if self.cond is None:
            from aetheris_ray.components.base import Context

            ctx = Context.from_states([self.state], lookback)
            path = self.disk / f"cond-{_context_hash(ctx)}.npz" if self.disk is not None else None
            self.cond = _load_cond(path)
            if self.cond is None:
                self.cond = self.fitted.condition(ctx)
                _save_cond(path, self.cond)
        return self.cond


def _context_hash(ctx: Any) -> str:
    import dataclasses

    import numpy as np

    h = hashlib.sha1()
    for f in dataclasses.fields(ctx):
        v = getattr(ctx, f.name)
        h.update(f.name.encode())
        if isinstance(v, np.ndarray):
            h.update(f"{v.dtype}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()[:16]


def _load_cond(path: Path | None) -> dict | None:
    """The nested ``{kind: {name: array}}`` saved by `_save_cond`; None when absent or unreadable."""
    if path is None or not path.is_file():
        return None
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            out: dict = {}
            for name in z.files:
                *outer, leaf = name.split("/")
                d = out
                for k in outer:
                    d = d.setdefault(k, {})
                d[leaf] = z[name]
            return out
    except (OSError, ValueError, KeyError):
        return None


def _save_cond(path: Path | None, cond: dict) -> None:
    """Write ``cond`` (nested dicts of numeric arrays) as one ``.npz``; anything else is not kept."""
    if path is None:
        return
    import io

    import numpy as np

    flat: dict = {}

    def walk(d: dict, prefix: str) -> bool:
        for k, v in d.items():
            if isinstance(v, dict):
                if not walk(v, f"{prefix}{k}/"):
                    return False
            elif isinstance(v, np.ndarray) and v.dtype != object and "/" not in str(k):
                flat[f"{prefix}{k}"] = v
            else:
                return False
        return True

    if not walk(cond, ""):
        return
    buf = io.BytesIO()
    np.savez(buf, **flat)
    try:
        atomic.write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only home only costs speed


class Lru:
    """A small thread-safe LRU map."""

    def __init__(self, size: int = 64):
        self.size, self.d, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.d:
                self.d.move_to_end(key)
                return self.d[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.d[key] = value
            self.d.move_to_end(key)
            while len(self.d) > self.size:
                self.d.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.d.clear()


_STATES = Lru()
#: Scenario sensitivities by (asset, origin, data signature): they depend on neither model nor horizon.
_SENS = Lru()


def clear_caches() -> None:
    """Forget the in-process cache of fitted parts, calibration buffers, states and scenario sensitivities."""
    _STATES.clear()
    _SENS.clear()


def _data_signature(asset: str, origin: pd.Timestamp, close: pd.Series) -> str:
    return f"{asset}|{origin.date()}|{len(close)}|{float(close.iloc[-1])!r}|{close.index[0].date()}"


def cache_key(asset: str, origin: pd.Timestamp, close: pd.Series, cfg: EngineConfig, h_sim: int) -> str:
    from aetheris_ray.walkforward import ALGORITHM_VERSION

    sig = f"{_data_signature(asset, origin, close)}|{cfg.version}|{h_sim}|wf{ALGORITHM_VERSION}"
    return hashlib.sha1(sig.encode()).hexdigest()[:16]


def state_dir(settings: Any) -> Path | None:
    """``settings.state_path`` (the default settings when None); None when settings cannot be read."""
    try:
        if settings is None:
            from aetheris_ray.config import load_settings

            settings = load_settings()
        return Path(settings.state_path)
    except Exception:  # noqa: BLE001 - a broken settings file must not stop an in-memory forecast
        return None


def _safe(asset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in asset)


def _load_disk(root: Path | None, asset: str, key: str, cfg: EngineConfig) -> tuple[FittedModel, Calibrator] | None:
    if root is None:
        return None
    d = root / "engine" / _safe(asset) / key
    try:
        if (d / "calibration.json").is_file() and (d / "fitted").is_dir():
            from aetheris_ray.components.registry import spec_class

            cal_part = spec_class("calibrator", cfg.calibrator.name)()
            return FittedModel.load(d / "fitted"), cal_part.load(d / "calibration.json")
    except (ModelNotFound, OSError, ValueError, KeyError):
        return None  # a stale or partial entry is rebuilt
    return None


def _entry_dir(root: Path, asset: str, key: str) -> Path:
    return root / "engine" / _safe(asset) / key


def _save_disk(root: Path | None, asset: str, key: str, fitted: FittedModel, cal: Calibrator) -> bool:
    """Write the entry; whether it was written."""
    if root is None:
        return False
    d = _entry_dir(root, asset, key)
    try:
        fitted.save(d / "fitted", overwrite=True)
        cal.save(d / "calibration.json")
    except OSError:
        return False  # a read-only home only costs speed
    return True


def origin_state(data: AssetData, origin: pd.Timestamp, close: pd.Series, config: EngineConfig, h_sim: int,
                 *, settings: Any = None, use_cache: bool = True) -> OriginState:
    """The model at ``origin``: from memory, else from disk, else from a walk-forward over the recent past.

    ``data`` is already cut at the origin's cutoff and ``config`` resolved
    (`aetheris_ray.model.resolve_config`); ``h_sim`` is the calibration bucket's horizon.
    """
    from aetheris_ray import walkforward as wf

    key = cache_key(data.asset, origin, close, config, h_sim)
    cached = _STATES.get(key) if use_cache else None
    if cached is not None:
        return cached
    root = state_dir(settings) if use_cache else None
    disk = _load_disk(root, data.asset, key, config)
    if disk is not None:
        from aetheris_ray.components.registry import spec_class

        market = spec_class("market_state", config.market_state.name)()
        cached = OriginState(disk[0], disk[1], market.compute_state(data, origin), disk=_entry_dir(root, data.asset, key))
    else:
        res = wf.walk_forward(data, pd.DatetimeIndex([origin]), [h_sim], [0.5], config, seed=0, keep_last=True)
        if res.last is None:
            raise DataError(f"{data.asset}: too little history at {origin.date()} to forecast "
                            f"({len(close) - 1} returns, at least {config.min_history} needed)")
        cached = OriginState(res.last["fitted"], res.calibrator, res.last["state"])
        if _save_disk(root, data.asset, key, cached.fitted, cached.calibrator):
            cached.disk = _entry_dir(root, data.asset, key)
    if use_cache:
        _STATES.put(key, cached)
    return cached


def sensitivities(data: AssetData, origin: pd.Timestamp, close: pd.Series, settings: Any, use_cache: bool) -> Any:
    """The scenario sensitivities at the origin (`aetheris_ray.sensitivity`): from memory, else from
    ``<state>/engine/<asset>/sensitivities-<key>.json`` when written with the current priors, else
    estimated (point in time) and kept in both (``use_cache=False``: estimated, kept nowhere)."""
    from aetheris_ray import sensitivity

    if not use_cache:
        return sensitivity.estimate(data, origin)
    sig = f"{_data_signature(data.asset, origin, close)}|sensitivity"
    key = hashlib.sha1(sig.encode()).hexdigest()[:16]
    sens = _SENS.get(key)
    if sens is not None:
        return sens
    root = state_dir(settings)
    path = None if root is None else root / "engine" / _safe(data.asset) / f"sensitivities-{key}.json"
    if path is not None and path.is_file():
        try:
            sens = sensitivity.Sensitivities.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # written with other priors, or partial: estimated again below
    if sens is None:
        sens = sensitivity.estimate(data, origin)
        if path is not None:
            try:
                atomic.write_json(path, sens.to_dict(), allow_nan=False)
            except OSError:
                pass  # a read-only home only costs speed
    _SENS.put(key, sens)
    return sens

