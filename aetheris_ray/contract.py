"""The forecast contract: one pydantic schema for the CLI's JSON, `Forecast.to_json()` and HTTP.

See ARCHITECTURE.md, "The forecast contract".  Fields may be added; none of the
documented ones is renamed.
"""

from __future__ import annotations

import datetime as dt
import reprlib
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from aetheris_ray.errors import InvalidInput
from aetheris_ray.quantiles import DEFAULT_LEVELS, levels_field

MIN_PATHS = 100
MAX_PATHS = 1_000_000
MAX_HORIZON = 90
#: Earliest ``as_of`` / outcome origin: the Bitcoin genesis block (no crypto closes before it).
MIN_DATE = dt.date(2009, 1, 3)
#: Longest echo of a bad input value in an error message, and most errors listed in one message.
MAX_ECHO = 200
MAX_ERRORS = 10


def _number(kind: str) -> Callable[[Any], Any]:
    """A before-validator refusing booleans and text where a number is expected.

    Pydantic's lax mode reads ``true`` as 1 and ``"7"`` as 7; the API takes numbers
    only (the CLI and `aetheris_ray.api.forecast` hand over ints and floats).  Other
    numbers (integral floats for ints, numpy scalars) go on to pydantic's own checks.
    """

    def check(v: Any) -> Any:
        if isinstance(v, (bool, str, bytes, bytearray)) or type(v).__name__ == "bool_":
            raise ValueError(f"Input should be a valid {kind}, not {type(v).__name__}")
        return v

    return check


#: An int that is not a bool or a string (``"horizon": true`` is refused, not read as 1).
Int = Annotated[int, BeforeValidator(_number("integer"))]
#: A float that is not a bool or a string.
Number = Annotated[float, BeforeValidator(_number("number"))]


def max_date() -> dt.date:
    """The latest accepted ``as_of`` / origin: today (UTC) plus one day."""
    return dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)


def check_date(v: dt.date | None) -> dt.date | None:
    """``v`` when inside [`MIN_DATE`, today (UTC) + 1 day]; a ValueError naming the bounds otherwise."""
    if v is not None and not (MIN_DATE <= v <= max_date()):
        raise ValueError(f"{v.isoformat()} is outside {MIN_DATE.isoformat()} .. {max_date().isoformat()} "
                         "(today UTC + 1 day); give a date with market data")
    return v


class ForecastRequest(BaseModel):
    """What a caller asks for.  The CLI flags carry the same names."""

    model_config = ConfigDict(extra="forbid")

    asset: str = Field(min_length=1, max_length=64, description="ticker, e.g. BTC-USD")
    horizon: Int = Field(ge=1, le=MAX_HORIZON, description="days ahead, 1..90")
    as_of: dt.date | None = Field(default=None, description="forecast origin; default: newest close")
    paths: Int = Field(default=10_000, ge=MIN_PATHS, le=MAX_PATHS, description="Monte Carlo paths")
    seed: Int | None = Field(default=None, ge=0, le=2**63 - 1, description="random seed; default: drawn and returned")
    quantiles: list[float] = Field(default_factory=lambda: list(DEFAULT_LEVELS), min_length=1, max_length=99)
    thresholds: list[Number] = Field(default_factory=list, max_length=64, description="price levels K")
    scenario: dict[str, Number] | None = Field(default=None, max_length=32, description="whitelisted what-if overrides")
    explain: bool = Field(default=False, strict=True, description="compute top drivers")
    model: str | None = Field(default=None, max_length=200, description="registered model version, 'latest' or a variant name")
    components: list[str] | None = Field(
        default=None, max_length=8,
        description="parts swapped into the model, 'KIND=NAME' or 'KIND=NAME@VERSION' (e.g. volatility=rough_vol)")

    @field_validator("quantiles", mode="before")
    @classmethod
    def _levels(cls, v: Any) -> list[float]:
        return levels_field(v)

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, v: dt.date | None) -> dt.date | None:
        return check_date(v)

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


_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxlist, _ECHO.maxtuple, _ECHO.maxdict = 2, 6, 6, 4
_ECHO.maxstring, _ECHO.maxlong, _ECHO.maxother = 80, 40, 80


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (the cut marked with how much was left out)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def echo(value: Any) -> str:
    """A short repr of an input value for an error message: never the whole of a large input."""
    try:
        text = _ECHO.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails must not turn a 422 into a 500
        text = f"<{type(value).__name__}>"
    return clip(text)


def validation_message(e: ValidationError) -> str:
    """One readable line from a pydantic error: ``field: problem; field: problem``.

    Bounded whatever the input: echoed values are shortened (`echo`), each message is
    clipped to `MAX_ECHO` characters, and at most `MAX_ERRORS` errors are listed.
    """
    errs = e.errors()
    parts = []
    for err in errs[:MAX_ERRORS]:
        loc = clip(".".join(str(p) for p in err["loc"]) or "request", 100)
        msg = clip(err["msg"].removeprefix("Value error, "))
        if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
            msg = f"{msg} (got {echo(err['input'])})"
        parts.append(f"{loc}: {msg}")
    if len(errs) > MAX_ERRORS:
        parts.append(f"... and {len(errs) - MAX_ERRORS:,} more errors")
    return "; ".join(parts)
