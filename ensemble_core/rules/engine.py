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
#: Triggers that fire on their own schedule or an operator's request, not in reaction to jobs:
#: they cannot feed themselves.
SCHEDULED_TRIGGERS = frozenset({"start", "interval", "operator"})
#: Gauges whose value changes as time passes, with no event.
TIME_GAUGES = frozenset({"queue.oldest-pending"})


@dataclass(slots=True)
class Firing:
    """One rule that fired, with the job (if any) that made it fire.

    `error` is set instead when the rule could not be evaluated (its metric raised): the rule is
    then switched off and the controller records the error once as the rule's result.
    """

    index: int
    rule: Rule
    group: str | None = None
    job: Any = None
    error: str | None = None


@dataclass(slots=True)
class _State:
    rule: Rule
    condition: Condition | None
    repetitions_left: int
    #: Reacts to jobs or metrics: the rules that can feed themselves, counted by the limits.
    reactive: bool
    backoff_counter: int = 0
    last_performed: float | None = None
    next_due: float = 0.0
    per_job: dict[Hashable, int] = field(default_factory=dict)


def is_reactive(rule: Rule) -> bool:
    """A rule that reacts to jobs or metrics: the kind a rule set can loop with."""
    return rule.key not in SCHEDULED_TRIGGERS


def metric_group(name: str) -> str:
    """The group a metric name is about (`count.sim.success`, `mean.sim-pending` -> sim)."""
    kind, _, rest = name.partition(".")
    if kind == "count":
        return rest.rpartition(".")[0] or ANY_GROUP
    if kind == "queue" or "-" not in rest:
        return ANY_GROUP
    return rest.rpartition("-")[0]


class RuleEngine:
    """Decides which rules fire; the caller performs them.

    Metric rules follow ensemble-python, which evaluates every metric rule on every job event:
    an *evaluation* is one event (or heartbeat, or gauge tick) at which the rule's `when` holds,
    and `backoff` skips that many evaluations. A rule whose `when` did not hold stays false until
    a metric of its group changes, so only those rules and the ones whose `when` held last time
    ("armed") are looked at: the same decisions as evaluating all of them, at the cost of the few.
    """

    def __init__(
        self, rules: list[Rule], limits: Limits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rules = rules
        self.limits = limits
        self.clock = clock
        #: Actions of reactive rules performed so far (what limits.max_actions bounds).
        self.performed = 0
        #: Why the rules stopped firing (the global limit), or "" while they may fire.
        self.exhausted = ""
        self._states = [
            _State(
                rule,
                parse_condition(rule.when) if rule.when is not None else None,
                rule.action.repetitions,
                reactive=is_reactive(rule),
            )
            for rule in rules
        ]
        #: trigger key -> group filter (None: any group) -> rule indexes
        self._by_trigger: defaultdict[str, defaultdict[str | None, list[int]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._metrics_by_group: defaultdict[str, list[int]] = defaultdict(list)
        #: Metric rules whose `when` held at their last evaluation: evaluated on every event.
        self.armed: set[int] = set()
        self._resubmit_states: list[_State] = []
        for index, rule in enumerate(rules):
            key = rule.key
            if rule.action.name == "resubmit":
                self._resubmit_states.append(self._states[index])
            if key in OUTCOME_TRIGGERS:
                for outcome in OUTCOME_TRIGGERS[key]:
                    self._by_trigger[f"outcome:{outcome}"][rule.job_group].append(index)
            elif key == "metric":
                self._metrics_by_group[metric_group(rule.name or "")].append(index)
            else:
                self._by_trigger[key][rule.job_group].append(index)
        #: Rules on a gauge that changes with time alone: looked at on every evaluation pass.
        self.time_rules = [
            i for i in self._metrics_by_group.get(ANY_GROUP, []) if rules[i].name in TIME_GAUGES
        ]
        self.job_event_names = frozenset(
            key.removeprefix("job-") for key in self._by_trigger if key.startswith("job-")
        )

    # State kept across a restart ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a restarted controller needs to go on where this one stopped (times relative)."""
        now = self.clock()
        return {
            "performed": self.performed,
            "exhausted": self.exhausted,
            "armed": sorted(self.armed),
            "rules": [
                {
                    "left": state.repetitions_left,
                    "backoff": state.backoff_counter,
                    "ago": None if state.last_performed is None else now - state.last_performed,
                    "due_in": state.next_due - now,
                    "per_job": dict(state.per_job),
                }
                for state in self._states
            ],
        }

    def restore(self, saved: dict[str, Any], elapsed: float) -> None:
        """Take up `state()` saved `elapsed` seconds ago (for the same rules)."""
        now = self.clock()
        self.performed = saved["performed"]
        self.exhausted = saved["exhausted"]
        self.armed = set(saved["armed"])
        for state, rule in zip(self._states, saved["rules"], strict=True):
            state.repetitions_left = rule["left"]
            state.backoff_counter = rule["backoff"]
            ago = rule["ago"]
            state.last_performed = None if ago is None else now - ago - elapsed
            state.next_due = now + rule["due_in"] - elapsed
            state.per_job = dict(rule["per_job"])

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
        """Rules on the derived outcome triggers (job-success, job-oom, ...), resubmit rules
        aside: those are offered by `resubmit_rules` and spent only by the one that acts."""
        indexes = [
            i
            for i in self._rules_on(f"outcome:{outcome}", group)
            if self.rules[i].action.name != "resubmit"
        ]
        return self._fire(indexes, group, job)

    def resubmit_rules(self, outcome: str, group: str, job: Hashable) -> list[int]:
        """Resubmit rules that may act on this ended job now, in file order; none is spent."""
        return [
            i
            for i in self._rules_on(f"outcome:{outcome}", group)
            if self.rules[i].action.name == "resubmit" and self._allows(self._states[i], job)
        ]

    def spend_resubmit(self, index: int, group: str, job: Hashable) -> Firing:
        """The resubmit rule `index` acted on `job`: it spends one of that job's repetitions."""
        self._spend(self._states[index], job)
        return Firing(index, self.rules[index], group, job)

    def forget(self, job: Hashable) -> None:
        """The logical job is over: drop what was kept for it (its resubmission counts)."""
        for state in self._resubmit_states:
            state.per_job.pop(job, None)

    def metrics_changed(
        self, groups: Iterable[str], value: Callable[[str], float | None]
    ) -> list[Firing]:
        """One evaluation pass after the metrics of `groups` changed (an event happened)."""
        by_group = self._metrics_by_group
        if not by_group:
            return []
        candidates = set(self.armed)
        changed = False
        for group in groups:
            changed = True
            candidates.update(by_group.get(group, ()))
        if changed:
            candidates.update(by_group.get(ANY_GROUP, ()))
        else:
            candidates.update(self.time_rules)
        if not candidates:
            return []
        return self._fire_metrics(sorted(candidates), value)

    def all_metrics(self, value: Callable[[str], float | None]) -> list[Firing]:
        """Every metric rule (on a heartbeat)."""
        indexes = sorted(i for group in self._metrics_by_group.values() for i in group)
        return self._fire_metrics(indexes, value)

    def time_gauges(self, value: Callable[[str], float | None]) -> list[Firing]:
        """The rules on gauges that change with time alone (a gauge tick)."""
        return self._fire_metrics(self.time_rules, value) if self.time_rules else []

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
        firings = []
        armed = self.armed
        for index in indexes:
            state = self._states[index]
            if state.repetitions_left <= 0:
                armed.discard(index)
                continue
            try:
                current = value(state.rule.name or "")
                held = current is not None and (state.condition is None or state.condition(current))
            except Exception as error:  # a metric that cannot be read: switch the rule off
                state.repetitions_left = 0
                armed.discard(index)
                reason = f"cannot evaluate {state.rule.name}: {type(error).__name__}: {error}"
                firings.append(Firing(index, state.rule, error=reason))
                continue
            if not held:
                armed.discard(index)
                continue
            armed.add(index)
            if self._perform(state, None):
                firings.append(Firing(index, state.rule))
        return firings

    def _fire(self, indexes: Iterable[int], group: str | None, job: Hashable) -> list[Firing]:
        firings = []
        for index in indexes:
            state = self._states[index]
            if self._perform(state, job):
                firings.append(Firing(index, state.rule, group, job))
        return firings

    def _perform(self, state: _State, job: Hashable) -> bool:
        """ensemble-python's repetitions and backoff, plus cooldown and the global limit."""
        if not self._allows(state, job):
            return False
        action = state.rule.action
        if action.backoff is not None:
            if state.backoff_counter > 0:
                state.backoff_counter -= 1
                return False
            state.backoff_counter = action.backoff
        self._spend(state, job)
        return True

    def _allows(self, state: _State, job: Hashable) -> bool:
        """Repetitions (per rule, or per job for resubmit), cooldown, then the global limit."""
        action = state.rule.action
        resubmit = action.name == "resubmit"
        if resubmit:
            if state.per_job.get(job, 0) >= action.repetitions:
                return False
        elif state.repetitions_left <= 0:
            return False
        last = state.last_performed
        if action.cooldown and last is not None and self.clock() - last < action.cooldown:
            return False
        if state.reactive and not resubmit and self.performed >= self.limits.max_actions:
            self.exhausted = (
                f"the rules performed {self.performed} actions, the limit "
                f"(rule {self._states.index(state)}, {action.name}, would have been next); "
                "if that is intended, raise limits.max_actions, otherwise a rule is feeding "
                "itself"
            )
            return False
        return True

    def _spend(self, state: _State, job: Hashable) -> None:
        if state.rule.action.name == "resubmit":
            state.per_job[job] = state.per_job.get(job, 0) + 1
        else:
            state.repetitions_left -= 1
            if state.reactive:
                self.performed += 1
        state.last_performed = self.clock()
