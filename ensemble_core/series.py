"""One series of values (a group's run times or pending times) and its statistics.

The first `EXACT_LIMIT` values are kept and their statistics computed exactly, with the standard
library, when asked for; past that, the values go into river's streaming statistics (O(1) per
value) and are not kept, so memory stays flat however long the run. Small ensembles, most
`ensemble run`s, never import river, which with numpy is most of a short run's fixed cost; long
ones get river's estimates (its quantiles are P² sketches, so `iqr` and `mad` become estimates
from about the 1,001st value on).

The import of river (with numpy, 0.3 s and 0.2 s of CPU on this project's 2-core test machine)
runs on a thread of its own, started when a series is half-way to the limit: the thread that
records values is the controller's loop, and while it stood still for the import, warm workers
ran out of tasks and their results waited. A series past the limit before the import is done
keeps its values exact a little longer, and turns to river's estimators at its next value after.

A series is pickled at every flush of the state journal. Pickling an object reads its
`__dict__`, and from then on CPython 3.11 keeps that object's attributes in a real dictionary
instead of its compact inline values: each `update` of a river estimator pickled once took twice
as long for the rest of the run (a few per cent of the controller's event rate, with a journal).
So a series hands its estimators to the pickler and goes on with twins of them, made without
touching their `__dict__` (`_twin`).
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: The statistics kept of each series, as rules name them.
STATISTICS = ("mean", "variance", "min", "max", "iqr", "mad")
#: Values kept for exact statistics before a series turns to river's streaming ones.
EXACT_LIMIT = 1000
#: Values at which a series has river imported in the background, for when it reaches the limit.
PREPARE_AT = EXACT_LIMIT // 2


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


class StreamingLoader:
    """Imports river's estimators once, on a thread of its own (see the module's docstring)."""

    def __init__(self, load: Callable[[], dict[str, Callable[[], Any]]] = _streaming) -> None:
        self._load = load
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Start the import, unless it was started."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    # A daemon: a run that ends meanwhile does not wait for numpy to load.
                    self._thread = threading.Thread(
                        target=self._import, name="river-import", daemon=True
                    )
                    self._thread.start()

    def ready(self, wait: bool = False) -> dict[str, Callable[[], Any]] | None:
        """The estimators' makers, or None while the import runs (started if it was not);
        `wait` waits for it. An import that failed raises here, on the caller's thread."""
        self.prepare()
        assert self._thread is not None
        if wait:
            self._thread.join()
        elif self._thread.is_alive():
            return None
        return self._load()  # cached when it succeeded; tried again, and raises, if it failed

    def _import(self) -> None:
        with contextlib.suppress(Exception):  # raised where the estimators are asked for
            self._load()


#: The process's loader: every series shares one import.
LOADER = StreamingLoader()


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
        values = self._values
        values.append(value)
        self._cache.clear()
        if len(values) == PREPARE_AT:
            LOADER.prepare()
        elif len(values) > EXACT_LIMIT:
            makers = LOADER.ready()
            if makers is not None:
                self._stream(makers)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its values or its estimators; the estimators pickled are then replaced by
        twins (see the module's docstring)."""
        models = self._models
        if models is not None:
            self._models = {name: _twin(model) for name, model in models.items()}
        return (_restored, (self._values, models))

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

    def _stream(self, makers: dict[str, Callable[[], Any]]) -> None:
        models = {name: make() for name, make in makers.items()}
        for value in self._values:
            for model in models.values():
                model.update(value)
        self._models, self._values = models, []


def _restored(values: list[float], models: dict[str, Any] | None) -> Series:
    """A series unpickled (its estimators twinned: unpickling fills their `__dict__` too)."""
    series = Series()
    series._values = values
    if models is not None:
        series._models = {name: _twin(model) for name, model in models.items()}
    return series


def _twin(model: Any) -> Any:
    """A copy of a river estimator that shares its state, built attribute by attribute on a
    fresh instance, so its attributes stay inline: the original, whose `__dict__` was or is
    about to be read, is dropped. Nested estimators (a variance's mean) are twinned too; other
    values (numbers, river's compiled quantile sketches) are shared."""
    if not hasattr(model, "__dict__") or not type(model).__module__.startswith("river."):
        return model
    twin = object.__new__(type(model))
    for name, value in vars(model).items():
        setattr(twin, name, _twin(value))
    return twin
