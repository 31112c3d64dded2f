"""Durable log of realised outcomes posted back to the service (Ray-free).

Each outcome is ``{asset, origin, horizon, price}``: the close of ``asset`` observed
``horizon`` days after the forecast origin.  The log lives in one JSON file under
``Settings.state_path`` and every change rewrites it atomically (`aetheris_ray.atomic`:
a temporary file in the same directory, fsync, ``os.replace``, fsync the directory), so a Serve
restart or a crash mid-write loses nothing that was acknowledged: the file holds
either the old or the new log, never a torn one.  Re-posting an outcome with the
same ``(asset, origin, horizon)`` replaces the stored price (idempotent retries).

The engine turns the stored outcomes of an asset into calibration pairs
(`aetheris_ray.pairs.outcome_pairs`) that join its conformal coverage buffers
(`aetheris_ray.engine.prepare`): the Serve app and the in-process API read the same
log, so they give the same calibrated answer.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, AliasChoices, field_validator

from aetheris_ray import atomic
from aetheris_ray.contract import Int, Number, check_date

SCHEMA_VERSION = 1
FILE_NAME = "outcomes.json"
#: Outcomes one ``POST /v1/outcomes`` (or one `OutcomeBatch`) may carry (issue 14, item 4; was 10,000).
MAX_OUTCOMES_PER_REQUEST = 1_000


class Outcome(BaseModel):
    """One realised price: ``asset`` closed at ``price`` ``horizon`` days after ``origin``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    asset: str = Field(min_length=1, max_length=64)
    origin: dt.date = Field(validation_alias=AliasChoices("origin", "as_of"), description="forecast origin (alias as_of)")
    horizon: Int = Field(ge=1, le=90, description="days after the origin, 1..90")
    price: Number = Field(gt=0, allow_inf_nan=False, description="realised close, quote currency")

    @field_validator("origin")
    @classmethod
    def _origin(cls, v: dt.date) -> dt.date:
        return check_date(v)  # type: ignore[return-value]


class OutcomeBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_OUTCOMES_PER_REQUEST)


class OutcomeLog:
    """The outcomes of every asset, keyed by ``(asset, origin, horizon)``, persisted at ``state_dir/outcomes.json``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._rows: dict[tuple[str, str, int], float] = {}
        if self.path.exists():
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"{self.path}: schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
            for r in doc["outcomes"]:
                self._rows[(r["asset"], r["origin"], int(r["horizon"]))] = float(r["price"])

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, outcomes: Iterable[Outcome]) -> int:
        """Store ``outcomes`` durably; returns how many were new (the rest replaced a stored price)."""
        new = 0
        rows = dict(self._rows)
        for o in outcomes:
            key = (o.asset, o.origin.isoformat(), int(o.horizon))
            new += key not in rows
            rows[key] = float(o.price)
        doc = {"schema_version": SCHEMA_VERSION, "outcomes": [
            {"asset": a, "origin": d, "horizon": h, "price": p} for (a, d, h), p in sorted(rows.items())]}
        atomic.write_json(self.path, doc, indent=1, allow_nan=False)
        self._rows = rows
        return new

    def rows(self, asset: str | None = None) -> list[dict[str, Any]]:
        return [{"asset": a, "origin": d, "horizon": h, "price": p}
                for (a, d, h), p in sorted(self._rows.items()) if asset is None or a == asset]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a, _, _ in self._rows:
            out[a] = out.get(a, 0) + 1
        return out


def stored_outcomes(state_dir: str | Path, asset: str) -> list[dict[str, Any]]:
    """The outcomes stored for ``asset`` under ``state_dir`` ([] when there is no log).

    An unreadable log is reported as a `DataQualityWarning` and ignored (a forecast
    still answers; the file is left as it is for the service to report).
    """
    import warnings

    from aetheris_ray.errors import DataQualityWarning

    path = Path(state_dir) / FILE_NAME
    if not path.is_file():
        return []
    try:
        return OutcomeLog(state_dir).rows(asset)
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{path}: outcome log unreadable ({e}); forecasting without posted outcomes",
                      DataQualityWarning, stacklevel=2)
        return []
