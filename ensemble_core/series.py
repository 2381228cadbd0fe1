"""One series of values (a group's run times or pending times) and its statistics.

The first `EXACT_LIMIT` values are kept and their statistics computed exactly, with the standard
library, when asked for; past that, the values go into river's streaming statistics (O(1) per
value) and are not kept, so memory stays flat however long the run. Small ensembles, most
`ensemble run`s, never import river, which with numpy is most of a short run's fixed cost; long
ones get river's estimates (its quantiles are P² sketches, so `iqr` and `mad` become estimates
from the 1,001st value on).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

#: The statistics kept of each series, as rules name them.
STATISTICS = ("mean", "variance", "min", "max", "iqr", "mad")
#: Values kept for exact statistics before a series turns to river's streaming ones.
EXACT_LIMIT = 1000


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return high - low


def _mad(values: Sequence[float]) -> float:
    middle = statistics.median(values)
    return statistics.median(abs(value - middle) for value in values)


_EXACT: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "variance": lambda values: statistics.variance(values) if len(values) > 1 else 0.0,
    "min": min,
    "max": max,
    "iqr": _iqr,
    "mad": _mad,
}


@functools.cache
def _streaming() -> dict[str, Callable[[], Any]]:
    from river import stats

    return {
        "mean": stats.Mean,
        "variance": stats.Var,
        "min": stats.Min,
        "max": stats.Max,
        "iqr": lambda: stats.IQR(q_inf=0.25, q_sup=0.75),
        "mad": stats.MAD,
    }


class Series:
    """The values of one series: exact statistics while few, river's streaming ones after."""

    __slots__ = ("_cache", "_models", "_values")

    def __init__(self) -> None:
        self._values: list[float] = []
        self._models: dict[str, Any] | None = None
        self._cache: dict[str, float] = {}

    def record(self, value: float) -> None:
        models = self._models
        if models is not None:
            for model in models.values():
                model.update(value)
            return
        self._values.append(value)
        self._cache.clear()
        if len(self._values) > EXACT_LIMIT:
            self._stream()

    def get(self, name: str) -> float | None:
        """A statistic of the series (a name of STATISTICS), None while it has no value."""
        if self._models is not None:
            return self._models[name].get()
        if not self._values:
            return None
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cache[name] = _EXACT[name](self._values)
        return cached

    def _stream(self) -> None:
        models = {name: make() for name, make in _streaming().items()}
        for value in self._values:
            for model in models.values():
                model.update(value)
        self._models, self._values = models, []
