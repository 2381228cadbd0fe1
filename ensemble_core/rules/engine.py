"""The rule engine: which rules fire for a trigger, honouring repetitions, backoff and cooldown.

It knows nothing of members or jobs beyond a group name and an opaque job key; the controller
performs the actions it returns. Rules are indexed by trigger and by the group their metric
names, so an event costs a dictionary lookup unless a rule listens for it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ensemble_core.rules.conditions import Condition, parse_condition
from ensemble_core.rules.schema import OUTCOME_TRIGGERS, Limits, Rule

ANY_GROUP = "*"


@dataclass(slots=True)
class Firing:
    """One rule that fired, with the job (if any) that made it fire."""

    index: int
    rule: Rule
    group: str | None = None
    job: Any = None


@dataclass(slots=True)
class _State:
    rule: Rule
    condition: Condition | None
    repetitions_left: int
    backoff_counter: int = 0
    last_performed: float | None = None
    next_due: float = 0.0
    per_job: dict[Hashable, int] = field(default_factory=dict)


def metric_group(name: str) -> str:
    """The group a metric name is about (`count.sim.success`, `mean.sim-pending` -> sim)."""
    kind, _, rest = name.partition(".")
    if kind == "count":
        return rest.rpartition(".")[0] or ANY_GROUP
    if kind == "queue" or "-" not in rest:
        return ANY_GROUP
    return rest.rpartition("-")[0]


class RuleEngine:
    """Decides which rules fire; the caller performs them."""

    def __init__(
        self, rules: list[Rule], limits: Limits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rules = rules
        self.limits = limits
        self.clock = clock
        self.performed = 0
        #: Why the rules stopped firing (the global limit), or "" while they may fire.
        self.exhausted = ""
        self._states = [
            _State(
                rule,
                parse_condition(rule.when) if rule.when is not None else None,
                rule.action.repetitions,
            )
            for rule in rules
        ]
        #: trigger key -> group filter (None: any group) -> rule indexes
        self._by_trigger: defaultdict[str, defaultdict[str | None, list[int]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._metrics_by_group: defaultdict[str, list[int]] = defaultdict(list)
        for index, rule in enumerate(rules):
            key = rule.key
            if key in OUTCOME_TRIGGERS:
                for outcome in OUTCOME_TRIGGERS[key]:
                    self._by_trigger[f"outcome:{outcome}"][rule.job_group].append(index)
            elif key == "metric":
                self._metrics_by_group[metric_group(rule.name or "")].append(index)
            else:
                self._by_trigger[key][rule.job_group].append(index)
        self.job_event_names = frozenset(
            key.removeprefix("job-") for key in self._by_trigger if key.startswith("job-")
        )

    # Triggers -------------------------------------------------------------------------------

    def start(self) -> list[Firing]:
        now = self.clock()
        for index in self._rules_on("interval", None):
            self._states[index].next_due = now + (self.rules[index].every or 0)
        return self._fire(self._rules_on("start", None), None, None)

    def job_event(self, event_name: str, group: str, job: Hashable) -> list[Firing]:
        """Rules on `job-<event_name>` for a job of `group`."""
        return self._fire(self._rules_on(f"job-{event_name}", group), group, job)

    def job_outcome(self, outcome: str, group: str, job: Hashable) -> list[Firing]:
        """Rules on the derived outcome triggers (job-success, job-oom, ...)."""
        return self._fire(self._rules_on(f"outcome:{outcome}", group), group, job)

    def metrics_changed(self, group: str, value: Callable[[str], float | None]) -> list[Firing]:
        """Metric rules about this group (and queue-wide ones) whose `when` holds now."""
        own = self._metrics_by_group.get(group, [])
        queue = self._metrics_by_group.get(ANY_GROUP, [])
        if not own and not queue:
            return []
        return self._fire_metrics(sorted(own + queue) if own and queue else own or queue, value)

    def all_metrics(self, value: Callable[[str], float | None]) -> list[Firing]:
        """Every metric rule (on a heartbeat)."""
        indexes = sorted(i for group in self._metrics_by_group.values() for i in group)
        return self._fire_metrics(indexes, value)

    def due_intervals(self) -> list[Firing]:
        now = self.clock()
        due = []
        for index in self._rules_on("interval", None):
            state = self._states[index]
            if now >= state.next_due:
                state.next_due = now + (state.rule.every or 0)
                due.append(index)
        return self._fire(due, None, None)

    def next_interval(self) -> float | None:
        """Seconds until the next interval rule with repetitions left is due."""
        pending = [
            self._states[i].next_due
            for i in self._rules_on("interval", None)
            if self._states[i].repetitions_left > 0
        ]
        return max(0.0, min(pending) - self.clock()) if pending else None

    def _rules_on(self, key: str, group: str | None) -> list[int]:
        """Indexes of the rules on `key` for jobs of `group`, in file order."""
        by_group = self._by_trigger.get(key)
        if by_group is None:
            return []
        anyone = by_group.get(None, [])
        own = by_group.get(group, []) if group is not None else []
        return sorted(anyone + own) if anyone and own else anyone or own

    # Limits ---------------------------------------------------------------------------------

    def _fire_metrics(self, indexes: Iterable[int], value: Callable[[str], float | None]):
        ready = []
        for index in indexes:
            state = self._states[index]
            if state.repetitions_left <= 0:
                continue
            current = value(state.rule.name or "")
            if current is None:
                continue
            if state.condition is None or state.condition(current):
                ready.append(index)
        return self._fire(ready, None, None)

    def _fire(self, indexes: Iterable[int], group: str | None, job: Hashable) -> list[Firing]:
        firings = []
        for index in indexes:
            state = self._states[index]
            if self._perform(state, job):
                firings.append(Firing(index, state.rule, group, job))
        return firings

    def _perform(self, state: _State, job: Hashable) -> bool:
        """ensemble-python's repetitions and backoff, plus cooldown and the global limit."""
        action = state.rule.action
        if self.performed >= self.limits.max_actions:
            self.exhausted = (
                f"the rules performed {self.performed} actions, the limit "
                f"(rule {self._states.index(state)}, {action.name}, would have been next); if "
                "that is intended, raise limits.max_actions, otherwise a rule is feeding itself"
            )
            return False
        now = self.clock()
        last = state.last_performed
        if action.cooldown and last is not None and now - last < action.cooldown:
            return False
        if action.name == "resubmit":
            used = state.per_job.get(job, 0)
            if used >= action.repetitions:
                return False
            state.per_job[job] = used + 1
        else:
            if state.repetitions_left <= 0:
                return False
            if action.backoff is not None:
                if state.backoff_counter > 0:
                    state.backoff_counter -= 1
                    return False
                state.backoff_counter = action.backoff
            state.repetitions_left -= 1
        state.last_performed = now
        self.performed += 1
        return True
