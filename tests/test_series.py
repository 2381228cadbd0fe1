"""A series' statistics: exact while it is small, river's streaming ones past EXACT_LIMIT."""

from __future__ import annotations

import functools
import pickle
import random
import statistics
import threading

import pytest

from ensemble_core import series as series_module
from ensemble_core.series import EXACT_LIMIT, PREPARE_AT, STATISTICS, Series, StreamingLoader


def test_a_small_series_has_exact_statistics():
    values = [0.5, 2.0, 3.5, 1.0, 10.0]
    series = Series()
    assert series.get("mean") is None
    for value in values:
        series.record(value)
    middle = statistics.median(values)
    assert series.get("mean") == pytest.approx(statistics.fmean(values))
    assert series.get("variance") == pytest.approx(statistics.variance(values))
    assert (series.get("min"), series.get("max")) == (0.5, 10.0)
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert series.get("iqr") == pytest.approx(q3 - q1)
    assert series.get("mad") == pytest.approx(statistics.median(abs(v - middle) for v in values))
    single = Series()
    single.record(4.0)
    assert [single.get(name) for name in ("variance", "iqr", "mad")] == [0.0, 0.0, 0.0]


def test_a_long_series_keeps_no_values_and_stays_close_to_the_truth():
    draw = random.Random(7)
    values = [draw.expovariate(1.0) for _ in range(20 * EXACT_LIMIT)]
    series = Series()
    series_module.LOADER.ready(wait=True)  # river imported: values stream from the limit on
    for value in values:
        series.record(value)
    assert series._values == []  # memory is flat: river's estimators hold the rest
    assert series.get("mean") == pytest.approx(statistics.fmean(values))
    assert series.get("variance") == pytest.approx(statistics.variance(values))
    assert (series.get("min"), series.get("max")) == (min(values), max(values))
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert series.get("iqr") == pytest.approx(q3 - q1, rel=0.05)
    assert set(STATISTICS) == {"mean", "variance", "min", "max", "iqr", "mad"}


def test_river_is_imported_in_the_background_and_a_series_stays_exact_until_it_is(monkeypatch):
    """The recording thread never waits for river: past the limit, values stay exact until
    the import is done, then stream from the next value on."""
    imported = threading.Event()
    loads: list[str] = []

    @functools.cache
    def slow_import():
        loads.append(threading.current_thread().name)
        imported.wait(10)
        return series_module._streaming()

    monkeypatch.setattr(series_module, "LOADER", StreamingLoader(slow_import))
    series = Series()
    for value in range(PREPARE_AT):
        series.record(float(value))
    assert loads == ["river-import"]  # started half-way, on a thread of its own
    for value in range(PREPARE_AT, EXACT_LIMIT + 50):
        series.record(float(value))
    assert len(series._values) == EXACT_LIMIT + 50
    assert series.get("max") == EXACT_LIMIT + 49  # exact meanwhile
    imported.set()
    series_module.LOADER.ready(wait=True)
    series.record(-1.0)
    assert series._values == []
    assert series.get("min") == -1.0 and series.get("max") == EXACT_LIMIT + 49
    assert series.get("mean") == pytest.approx(statistics.fmean([*range(EXACT_LIMIT + 50), -1]))
    assert loads == ["river-import"]


def test_a_failed_import_of_river_raises_where_values_are_recorded(monkeypatch):
    def broken():
        raise ImportError("no river here")

    monkeypatch.setattr(series_module, "LOADER", StreamingLoader(broken))
    series = Series()
    for value in range(EXACT_LIMIT):
        series.record(float(value))
    with pytest.raises(ImportError, match="no river here"):
        series_module.LOADER.ready(wait=True)
    with pytest.raises(ImportError, match="no river here"):
        series.record(1.0)


def streaming_series(seed: int) -> Series:
    draw = random.Random(seed)
    series = Series()
    series_module.LOADER.ready(wait=True)
    for _ in range(EXACT_LIMIT + 50):
        series.record(draw.random())
    return series


def test_a_pickled_series_goes_on_with_twins_of_its_estimators_and_loads_whole():
    """The state journal pickles the series at every flush: the live one then holds twins of
    its estimators (which keep their attributes inline), with the same state; the pickled one
    loads with the same statistics and goes on alike."""
    series = streaming_series(3)
    before = {name: series.get(name) for name in STATISTICS}
    pickled_models = dict(series._models)
    loaded = pickle.loads(pickle.dumps(series))
    assert {name: series.get(name) for name in STATISTICS} == before
    assert {name: loaded.get(name) for name in STATISTICS} == before
    assert all(series._models[name] is not model for name, model in pickled_models.items())
    assert series._models["variance"].mean is not pickled_models["variance"].mean  # nested
    for value in (0.25, 0.75, 2.0):
        series.record(value)
        loaded.record(value)
    assert {name: loaded.get(name) for name in STATISTICS} == {
        name: series.get(name) for name in STATISTICS
    }


def test_a_series_pickled_by_an_earlier_version_loads(monkeypatch):
    """State directories written before series pickled themselves (slots, pickled by default)."""
    series = streaming_series(4)
    exact = Series()
    exact.record(2.5)
    monkeypatch.delattr(Series, "__reduce__")
    blobs = [pickle.dumps(series), pickle.dumps(exact)]
    monkeypatch.undo()
    loaded, loaded_exact = (pickle.loads(blob) for blob in blobs)
    assert {name: loaded.get(name) for name in STATISTICS} == {
        name: series.get(name) for name in STATISTICS
    }
    assert loaded_exact.get("mean") == 2.5
