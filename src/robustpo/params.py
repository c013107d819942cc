"""Declared allowed values: `Param` (a range or a set of choices) and `Rule` (a relation
between fields), shared by the loss hyperparameters (losses.py) and the config sections
(config.py), so that every value is checked in one declarative place per dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Param:
    """The values a hyperparameter or config field may take (its type is checked elsewhere).

    A number lies in [low, high], each end excluded when `open_low` / `open_high` and absent
    when None, and is finite; a string is one of `choices`. `items`: the value is a list of
    such values, of exactly that many (0: any number of them)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[str, ...] = ()
    items: int | None = None

    def allows(self, v) -> bool:
        if self.items is not None:
            if not isinstance(v, (list, tuple)) or (self.items and len(v) != self.items):
                return False
            return all(self._allows_one(x) for x in v)
        return self._allows_one(v)

    def _allows_one(self, v) -> bool:
        if self.choices:
            return isinstance(v, str) and v in self.choices
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return ((self.low is None or (v > self.low if self.open_low else v >= self.low))
                and (self.high is None or (v < self.high if self.open_high else v <= self.high)))

    def _one(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        if self.low is None and self.high is None:
            return "any finite number"
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"

    def __str__(self) -> str:
        if self.items is None:
            return self._one()
        count = f"{self.items} values" if self.items else "a list of values"
        return f"{count}, each {self._one()}"


@dataclass(frozen=True)
class Rule:
    """A relation a config section's fields must satisfy: `holds(section)`; otherwise the error
    names `key` and says `must` (formatted with the section's fields, e.g. "{max_length}")."""

    key: str
    holds: Callable[[object], bool]
    must: str
