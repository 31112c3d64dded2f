"""The forecast contract: one pydantic schema for the CLI's JSON, `Forecast.to_json()` and HTTP.

See ARCHITECTURE.md, "The forecast contract".  Fields may be added; none of the
documented ones is renamed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aetheris_ray.errors import InvalidInput
from aetheris_ray.quantiles import DEFAULT_LEVELS, levels_field

MIN_PATHS = 100
MAX_PATHS = 1_000_000
MAX_HORIZON = 90


class ForecastRequest(BaseModel):
    """What a caller asks for.  The CLI flags carry the same names."""

    model_config = ConfigDict(extra="forbid")

    asset: str = Field(min_length=1, max_length=64, description="ticker, e.g. BTC-USD")
    horizon: int = Field(ge=1, le=MAX_HORIZON, description="days ahead, 1..90")
    as_of: dt.date | None = Field(default=None, description="forecast origin; default: newest close")
    paths: int = Field(default=10_000, ge=MIN_PATHS, le=MAX_PATHS, description="Monte Carlo paths")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1, description="random seed; default: drawn and returned")
    quantiles: list[float] = Field(default_factory=lambda: list(DEFAULT_LEVELS), min_length=1, max_length=99)
    thresholds: list[float] = Field(default_factory=list, max_length=64, description="price levels K")
    scenario: dict[str, float] | None = Field(default=None, description="whitelisted what-if overrides")
    explain: bool = Field(default=False, description="compute top drivers")
    model: str | None = Field(default=None, description="registered model version, 'latest' or a variant name")
    components: list[str] | None = Field(
        default=None, max_length=8,
        description="parts swapped into the model, 'KIND=NAME' or 'KIND=NAME@VERSION' (e.g. volatility=rough_vol)")

    @field_validator("quantiles", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> list[float]:
        return levels_field(v)

    @field_validator("components")
    @classmethod
    def _components(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            from aetheris_ray.components.registry import parse_choice

            for text in v:
                if len(text) > 200:
                    raise ValueError("a component choice is at most 200 characters")
                parse_choice(text)  # InvalidInput (a ValueError) naming the problem
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        for k in v:
            if not (k > 0 and k < float("inf")):
                raise ValueError(f"threshold {k!r} must be a positive finite price")
        return v


class ThresholdProb(BaseModel):
    """P(price < K) and P(price > K) at the last horizon step, and how they were estimated.

    ``estimator`` is ``"monte_carlo"`` (the share of simulated paths) or
    ``"importance_sampling"`` (far thresholds: tilted paths weighted by their
    likelihood ratio); ``std_error`` is the Monte Carlo standard error of either
    probability (None when not reported).
    """

    price: float
    p_below: float
    p_above: float
    estimator: str = "monte_carlo"
    std_error: float | None = None


class ForecastResponse(BaseModel):
    """What a forecast is, on the wire.  ``quantiles[label][i]`` is the price at ``horizons[i]``."""

    asset: str
    as_of: dt.date
    spot: float
    horizons: list[int]
    quantiles: dict[str, list[float]]
    thresholds: list[ThresholdProb]
    regime: dict[str, Any]
    mm_indices: dict[str, Any]
    drivers: dict[str, Any] | None
    conditional: bool
    seed: int
    model_version: str
    calibration_version: str
    coverage: dict[str, Any]
    paths: int
    metadata: dict[str, Any] = Field(default_factory=dict)


def parse_request(payload: dict[str, Any] | ForecastRequest) -> ForecastRequest:
    """Validate a request; errors become one `InvalidInput` line naming each bad field."""
    if isinstance(payload, ForecastRequest):
        return payload
    try:
        return ForecastRequest.model_validate(payload)
    except ValidationError as e:
        raise InvalidInput(validation_message(e)) from None


def validation_message(e: ValidationError) -> str:
    """One readable line from a pydantic error: ``field: problem; field: problem``."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
