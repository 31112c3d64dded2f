"""Quantile levels: floats inside the engine, ``qNN`` labels outside.

>>> Quantile.parse("P5").label, Quantile.parse(0.975).label, Quantile.parse("q025").value
('q05', 'q975', 0.025)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from aetheris_ray.errors import InvalidInput

DEFAULT_LEVELS: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95)

#: Decimals a level keeps (its label, in percent, keeps two fewer): finer levels round to their neighbours.
LABEL_DIGITS = 10
_FORMS = "a float in (0, 1) such as 0.05, or a label such as 'q05', 'p05', 'P5', 'q025'"
_LABEL = re.compile(r"^[qQpP](\d+)$")


@dataclass(frozen=True, order=True)
class Quantile:
    """One quantile level.

    ``value`` is the level as a float in (0, 1).  ``label`` is ``q`` plus the
    level in percent written with two integer digits; finer levels append their
    decimal digits (``0.025 -> q025``, ``0.975 -> q975``, ``0.001 -> q001``).
    """

    value: float

    @classmethod
    def parse(cls, x: "float | str | Quantile") -> "Quantile":
        """Accept ``0.05``, ``"0.05"``, ``"q05"``, ``"p05"``, ``"P5"``, ``"q025"``."""
        if isinstance(x, Quantile):
            return x
        if isinstance(x, bool):
            raise InvalidInput(f"quantile level {x!r} is not valid: use {_FORMS}")
        if isinstance(x, (int, float)):
            value = float(x)
        elif isinstance(x, str):
            if len(x) > 40:
                raise InvalidInput(f"quantile level {x[:40]!r}... is {len(x):,} characters long: use {_FORMS}")
            s = x.strip()
            m = _LABEL.match(s)
            if m:
                digits = m.group(1)
                if s[0] in "qQ" or len(digits) >= 2:
                    # q05 -> 05 percent; q025 -> 02.5 percent; p05 -> 05
                    value = float(digits[:2] + "." + digits[2:]) / 100 if len(digits) > 2 else int(digits) / 100
                else:  # P5 -> 5 percent
                    value = int(digits) / 100
            else:
                try:
                    value = float(s)
                except ValueError:
                    raise InvalidInput(f"quantile level {x!r} is not valid: use {_FORMS}") from None
        else:
            raise InvalidInput(f"quantile level {x!r} is not valid: use {_FORMS}")
        if not (0.0 < value < 1.0):
            raise InvalidInput(f"quantile level {x!r} is outside (0, 1): use {_FORMS}")
        rounded = round(value, LABEL_DIGITS)
        if not (0.0 < rounded < 1.0):
            # the level and its label keep LABEL_DIGITS decimals: 1e-12 would be stored as 0 and labelled q00
            raise InvalidInput(f"quantile level {x!r} rounds to {rounded:g} at the label precision "
                               f"({LABEL_DIGITS} decimals): use a level from {10.0 ** -LABEL_DIGITS:g} "
                               f"to {1 - 10.0 ** -LABEL_DIGITS}")
        return cls(rounded)

    @property
    def label(self) -> str:
        pct = f"{self.value * 100:.{LABEL_DIGITS - 2}f}".rstrip("0").rstrip(".")
        whole, _, frac = pct.partition(".")
        return "q" + whole.zfill(2) + frac


def parse_levels(levels: Iterable["float | str"] | str | None) -> tuple[float, ...]:
    """Validate a list of levels: each in (0, 1), strictly increasing.

    A comma-separated string is accepted (CLI form).  ``None`` gives the defaults.

    >>> parse_levels("0.1,q50,P90")
    (0.1, 0.5, 0.9)
    """
    if levels is None:
        return DEFAULT_LEVELS
    if isinstance(levels, str):
        levels = [p for p in levels.split(",") if p.strip()]
    values = tuple(Quantile.parse(x).value for x in levels)
    if not values:
        raise InvalidInput("quantiles: the list is empty; give at least one level in (0, 1)")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise InvalidInput(f"quantiles: levels must be strictly increasing, got {list(values)}")
    return values


def levels_field(v: Any) -> list[float]:
    """`parse_levels` for pydantic ``field_validator``s (errors become ``ValueError``)."""
    try:
        return list(parse_levels(v))
    except InvalidInput as e:
        raise ValueError(str(e)) from None


def labels(levels: Sequence[float]) -> list[str]:
    """``qNN`` labels of float levels."""
    return [Quantile(float(v)).label for v in levels]
