"""`when:` conditions and durations as rule files write them: 3, "> 5", "<= 2.5", ">= 30s"."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from ensemble_core.bounds import DAY, DURATION, THRESHOLD, as_float, shown

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
}
_NUMBER = r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>ms|s|m|h|d)?"
_CONDITION = re.compile(rf"^\s*(?P<op><=|>=|==|!=|<|>|=)?\s*{_NUMBER}\s*$")
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*$")

CONDITION_HELP = 'a number (means ==) or a comparison such as "> 5", "<= 2.5", ">= 30s"'
DURATION_HELP = 'seconds, or a number with a unit: "500ms", "30s", "5m", "2h", "1d"'


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled `when`: compare a metric value against a threshold."""

    symbol: str
    threshold: float

    def __call__(self, value: float) -> bool:
        return _OPERATORS[self.symbol](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.symbol} {self.threshold:g}"


def _scaled(match: re.Match[str]) -> float:
    return float(match["number"]) * _UNITS[match["unit"] or "s"]


def parse_condition(when: int | float | str) -> Condition:
    """Compile a `when`; raise ValueError naming what is expected."""
    if isinstance(when, bool):
        raise ValueError(f"when: {str(when).lower()} is a yes/no, not {CONDITION_HELP}")
    if isinstance(when, (int, float)):
        symbol, threshold = "==", as_float(when)
    else:
        match = _CONDITION.match(when) if isinstance(when, str) else None
        if match is None:
            raise ValueError(f"when: {shown(when)} is not {CONDITION_HELP}")
        symbol, threshold = match["op"] or "==", _scaled(match)
    problem = THRESHOLD.problem(threshold)
    if problem:
        raise ValueError(f"when: the threshold {problem}")
    return Condition(symbol, threshold)


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string with a unit; raise ValueError naming what is expected."""
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not a duration: give {DURATION_HELP}")
    if isinstance(value, (int, float)):
        seconds = as_float(value)
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{shown(value)} is not a duration: give {DURATION_HELP}")
        seconds = _scaled(match)
    if seconds < 0:
        raise ValueError(f"{shown(value)} is negative: a duration must be 0 or more")
    if not math.isfinite(seconds) or seconds > DURATION.high:
        raise ValueError(
            f"{shown(value)}: a duration must be finite and at most {DURATION.high / DAY:g} days"
        )
    return seconds
