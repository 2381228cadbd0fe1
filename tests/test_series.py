"""A series' statistics: exact while it is small, river's streaming ones past EXACT_LIMIT."""

from __future__ import annotations

import random
import statistics

import pytest

from ensemble_core.series import EXACT_LIMIT, STATISTICS, Series


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
    for value in values:
        series.record(value)
    assert series._values == []  # memory is flat: river's estimators hold the rest
    assert series.get("mean") == pytest.approx(statistics.fmean(values))
    assert series.get("variance") == pytest.approx(statistics.variance(values))
    assert (series.get("min"), series.get("max")) == (min(values), max(values))
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    assert series.get("iqr") == pytest.approx(q3 - q1, rel=0.05)
    assert set(STATISTICS) == {"mean", "variance", "min", "max", "iqr", "mad"}
