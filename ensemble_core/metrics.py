"""Metrics per job group, under ensemble-python's names.

`count.<group>.<key>` are plain counters (submitted, pending, running, finished, success, failed,
and one per outcome). `<stat>.<group>-duration` and `<stat>.<group>-pending` are statistics of
the series recorded as jobs start and end (exact while few, river's streaming ones after: see
`series.py`). `queue.<gauge>` are read when asked: `pending` and `running` add up
the groups' counters, `oldest-pending` asks the controller.

With several members, each member's jobs are counted again under the pseudo-group `@<member>`
(`count.@cloud.running`, `mean.@cloud-pending`): the same counters and series, per member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ensemble_core.events import Outcome
from ensemble_core.series import STATISTICS, Series

__all__ = [
    "COUNTS",
    "OUTCOME_COUNTERS",
    "STATISTICS",
    "STATISTIC_ALIASES",
    "SUMMARY_SERIES",
    "Metrics",
]

STATISTIC_ALIASES = {"var": "variance"}
SUMMARY_SERIES = {"duration": "duration", "pending": "pending_time"}
COUNTS = ("submitted", "pending", "running", "finished", "success", "failed")
#: What starts the name of a member's pseudo-group (`@cloud`): no job group's name can.
MEMBER_MARK = "@"
#: The counters an attempt's end adds to, by outcome: its own, and `failed` for the failures
#: that have a name of their own (oom, timeout...). Worked out once: an enum's `value` and
#: `ok` are slow to read on the path of every job's end.
OUTCOME_COUNTERS: dict[Outcome, tuple[str, ...]] = {
    outcome: (outcome.value,)
    + (("failed",) if outcome not in (Outcome.SUCCESS, Outcome.CANCELLED, Outcome.FAILED) else ())
    for outcome in Outcome
}


class GroupMetrics:
    """Counters and series statistics of one group."""

    __slots__ = ("counts", "series")

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.series: dict[str, Series] = {}

    def record(self, series: str, value: float) -> None:
        values = self.series.get(series)
        if values is None:
            values = self.series[series] = Series()
        values.record(value)

    def statistic(self, name: str, series: str) -> float | None:
        values = self.series.get(series)
        return None if values is None else values.get(name)


class Metrics:
    """All groups' metrics plus queue gauges, read by the rule engine by name."""

    def __init__(self, oldest_pending: Callable[[], float] = lambda: 0.0) -> None:
        self.groups: defaultdict[str, GroupMetrics] = defaultdict(GroupMetrics)
        #: Groups whose metrics changed since the rules last looked (the reader clears it).
        self.changed: set[str] = set()
        #: Whether a member's pseudo-group goes into `changed` when its counters change: the
        #: controller turns it off when no rule reads a member's metrics, which spares the
        #: rules a look at a group no rule is about at every start and end.
        self.report_members = True
        self._oldest_pending = oldest_pending

    def count(self, group: str, key: str, delta: int = 1) -> None:
        self.groups[group].counts[key] += delta
        if self.report_members or group[:1] != MEMBER_MARK:
            self.changed.add(group)

    def shift(self, group: str, source: str, target: str, member: str | None = None) -> None:
        """One of `source` becomes one of `target` (a job from pending to running): one
        call on the path of every event that moves a job, which counts it under its
        `member`'s pseudo-group (`@cloud`) too when it has one."""
        groups = self.groups
        counts = groups[group].counts
        counts[source] -= 1
        counts[target] += 1
        self.changed.add(group)
        if member is not None:
            counts = groups[member].counts
            counts[source] -= 1
            counts[target] += 1
            if self.report_members:
                self.changed.add(member)

    def ended(self, group: str, outcome: Outcome, member: str | None = None) -> None:
        """An attempt's outcome, in its group's counters (and its member's, if it has one)."""
        keys = OUTCOME_COUNTERS[outcome]
        groups = self.groups
        counts = groups[group].counts
        for key in keys:
            counts[key] += 1
        self.changed.add(group)
        if member is not None:
            counts = groups[member].counts
            for key in keys:
                counts[key] += 1
            if self.report_members:
                self.changed.add(member)

    def record(self, group: str, series: str, value: float) -> None:
        self.groups[group].record(series, value)
        self.changed.add(group)

    def value(self, name: str) -> float | None:
        """The current value of a metric name, or None while it has no data."""
        kind, _, rest = name.partition(".")
        if kind == "count":
            group, _, key = rest.rpartition(".")
            metrics = self.groups.get(group)
            return None if metrics is None else metrics.counts.get(key, 0)
        if kind == "queue":
            return self.gauge(rest)
        stat = STATISTIC_ALIASES.get(kind, kind)
        group, _, series = rest.rpartition("-")
        metrics = self.groups.get(group)
        return None if metrics is None else metrics.statistic(stat, series)

    def gauge(self, name: str) -> float | None:
        """A queue-wide gauge: pending, running or oldest-pending (seconds); None if unknown."""
        if name == "oldest-pending":
            return self._oldest_pending()
        if name in ("pending", "running"):
            return float(
                sum(
                    metrics.counts.get(name, 0)
                    for group, metrics in self.groups.items()
                    if group[:1] != MEMBER_MARK
                )
            )
        return None

    def summary(self, members: bool = False) -> dict[str, dict[str, Any]]:
        """Per group (or, with `members`, per member): every counter and, per series, every
        statistic (for tables and --json)."""
        result: dict[str, dict[str, Any]] = {}
        for group, metrics in sorted(self.groups.items()):
            if (group[:1] == MEMBER_MARK) != members:
                continue
            entry: dict[str, Any] = {key: metrics.counts.get(key, 0) for key in COUNTS}
            entry.update({k: v for k, v in metrics.counts.items() if k not in entry})
            for series, values in metrics.series.items():
                entry[SUMMARY_SERIES[series]] = {
                    name: _rounded(values.get(name)) for name in STATISTICS
                }
            result[group.removeprefix(MEMBER_MARK) if members else group] = entry
        return result


def _rounded(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value
