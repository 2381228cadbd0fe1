"""The rules YAML as pydantic models: ensemble-python's format, grown.

Files written for ensemble-python validate unchanged. `ensemble schema` prints the JSON Schema of
`EnsembleFile` for editors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ensemble_core.events import JOB_EVENTS, OTHER_JOB_EVENTS
from ensemble_core.rules.conditions import (
    CONDITION_HELP,
    DURATION_HELP,
    parse_condition,
    parse_duration,
)
from ensemble_core.spec import JobSpec

#: Triggers derived from a job's outcome, fired once per ended job attempt.
OUTCOME_TRIGGERS = {
    "job-success": ("success",),
    "job-fail": ("failed", "oom", "timeout", "unsatisfiable", "node-failure"),
    "job-oom": ("oom",),
    "job-timeout": ("timeout",),
    "job-cancel": ("cancelled",),
    "job-unsatisfiable": ("unsatisfiable",),
    "job-node-failure": ("node-failure",),
    "job-end": (
        "success",
        "failed",
        "oom",
        "timeout",
        "cancelled",
        "unsatisfiable",
        "node-failure",
    ),
}
#: ensemble-python's state names, mapped onto the RFC 21 event that enters the state.
TRIGGER_ALIASES = {
    "job-sched": "job-priority",
    "job-run": "job-alloc",
    "job-cleanup": "job-finish",
    "job-inactive": "job-clean",
}
EVENT_TRIGGERS = tuple(f"job-{name}" for name in (*JOB_EVENTS, *OTHER_JOB_EVENTS))
TRIGGERS = (
    "start",
    "interval",
    "metric",
    *EVENT_TRIGGERS,
    *(t for t in OUTCOME_TRIGGERS if t not in EVENT_TRIGGERS),
    *TRIGGER_ALIASES,
)
ACTIONS = ("submit", "resubmit", "cancel", "grow", "shrink", "terminate", "custom")

#: Resource names a `resubmit` may change, as Snakemake, Parsl and Flux users write them.
RESOURCE_ALIASES = {
    "mem_mb": "memory_mb",
    "memory": "memory_mb",
    "memory_mb": "memory_mb",
    "disk_mb": "disk_mb",
    "walltime": "walltime",
    "duration": "walltime",
    "cores": "cores_per_task",
    "cores_per_task": "cores_per_task",
    "gpus": "gpus_per_task",
    "gpus_per_task": "gpus_per_task",
    "nodes": "nodes",
    "tasks": "tasks",
}


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration), Field(description=DURATION_HELP)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Action(_Strict):
    """What a rule does when it fires, and how often it may."""

    name: Literal[ACTIONS] = Field(description="the action")  # type: ignore[valid-type]
    label: str | None = Field(None, description="submit/cancel: the job group")
    value: int | None = Field(None, ge=1, description="grow/shrink: nodes; submit: job count")
    resources: dict[str, int | float | str] = Field(
        default_factory=dict,
        description='resubmit: changes such as {mem_mb: "x2", walltime: "x1.5", cores: 4}',
    )
    function: str | None = Field(None, description="custom: 'module:function' to call")
    repetitions: int = Field(
        1, ge=1, description="times the action may run (resubmit: per job, others: per rule)"
    )
    backoff: int | None = Field(None, ge=0, description="evaluations skipped between runs")
    cooldown: Duration | None = Field(None, description="time that must pass between runs")

    @field_validator("resources")
    @classmethod
    def _known_resources(cls, resources: dict[str, Any]) -> dict[str, Any]:
        unknown = [key for key in resources if key not in RESOURCE_ALIASES]
        if unknown:
            raise ValueError(
                f"unknown resource {', '.join(unknown)}: use one of {', '.join(RESOURCE_ALIASES)}"
            )
        for key, change in resources.items():
            if isinstance(change, str) and not _is_change(change):
                raise ValueError(
                    f'{key}: {change!r} is not a change: write "x2", "+512" or a number'
                )
        return resources

    @model_validator(mode="after")
    def _needs(self) -> Action:
        if self.name == "custom" and not self.function:
            raise ValueError(
                "a custom action needs function: 'module:function' (code in the YAML is not run)"
            )
        if self.name == "submit" and not self.label:
            raise ValueError("a submit action needs label: the job group to submit")
        return self

    @property
    def changes(self) -> dict[str, int | float | str]:
        """`resources` under JobSpec field names."""
        return {RESOURCE_ALIASES[key]: change for key, change in self.resources.items()}


def _is_change(text: str) -> bool:
    body = text.strip().lstrip("x*+")
    try:
        float(body)
    except ValueError:
        return False
    return True


class Rule(_Strict):
    """A trigger, an optional filter and condition, and an action."""

    trigger: str = Field(description="start, interval, metric, job-<event> or a job outcome")
    name: str | None = Field(
        None, description="metric: the metric name; job triggers: the group (alias of group)"
    )
    group: str | None = Field(None, description="job triggers: only jobs of this group")
    when: int | float | str | None = Field(None, description=f"metric: {CONDITION_HELP}")
    every: Duration | None = Field(None, description="interval: how often the rule fires")
    action: Action

    @field_validator("trigger")
    @classmethod
    def _known_trigger(cls, trigger: str) -> str:
        if trigger not in TRIGGERS:
            raise ValueError(
                f"unknown trigger '{trigger}': use start, interval, metric, "
                f"job-<event> ({', '.join(JOB_EVENTS)}) or an outcome "
                f"({', '.join(OUTCOME_TRIGGERS)})"
            )
        return trigger

    @field_validator("when")
    @classmethod
    def _valid_when(cls, when: Any) -> Any:
        if when is not None:
            parse_condition(when)
        return when

    @model_validator(mode="after")
    def _trigger_needs(self) -> Rule:
        if self.trigger == "metric" and not self.name:
            raise ValueError("a metric rule needs name: the metric, e.g. count.<group>.success")
        if self.trigger == "interval" and not self.every:
            raise ValueError("an interval rule needs every: how often, e.g. 30s")
        if self.action.name == "resubmit" and not self.trigger.startswith("job-"):
            raise ValueError("resubmit needs a job trigger (job-oom, job-fail, ...): which job?")
        return self

    @property
    def key(self) -> str:
        """The trigger after ensemble-python aliases are resolved."""
        return TRIGGER_ALIASES.get(self.trigger, self.trigger)

    @property
    def job_group(self) -> str | None:
        """The group a job trigger is limited to (`group`, or ensemble-python's `name`)."""
        if self.trigger.startswith("job-"):
            return self.group or self.name
        return self.group


class JobGroup(_Strict):
    """A group of identical jobs that `submit` actions start (ensemble files only)."""

    name: str
    command: str | list[str]
    count: int = Field(1, ge=0, description="jobs per submit")
    nodes: int | None = Field(1, ge=1)
    tasks: int | None = Field(None, ge=1)
    cores: int = Field(1, ge=1, description="cores per task")
    gpus: int = Field(0, ge=0, description="gpus per task")
    memory: int | None = Field(None, ge=1, description="MB for the whole job")
    duration: Duration | None = Field(None, description="walltime; 0 or unset is unlimited")
    workdir: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)

    def spec(self) -> JobSpec:
        """The JobSpec of one job of this group (ensemble-python: one task per node by default)."""
        nodes = self.nodes
        return JobSpec(
            command=self.command,
            group=self.name,
            nodes=nodes,
            tasks=max(self.tasks or 1, nodes or 1),
            cores_per_task=self.cores,
            gpus_per_task=self.gpus,
            memory_mb=self.memory,
            walltime=self.duration or None,
            cwd=self.workdir,
            environment=self.environment,
        )


class Logging(_Strict):
    debug: bool = False
    heartbeat: Duration | None = Field(
        None, description="re-evaluate metric rules (and record pending time) this often"
    )


class Limits(_Strict):
    """Global limits, so that a rule set that feeds itself stops."""

    max_actions: int = Field(1000, ge=1, description="actions performed by all rules together")
    max_jobs: int = Field(10000, ge=1, description="member jobs submitted, resubmissions included")


class EnsembleFile(_Strict):
    """An ensemble file (`ensemble run`) or a shared rules file (Snakemake, Parsl)."""

    jobs: list[JobGroup] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    logging: Logging = Field(default_factory=Logging)
    limits: Limits = Field(default_factory=Limits)
    member: dict[str, Any] = Field(
        default_factory=dict, description="member settings, e.g. {name: local, cores: 4}"
    )
    custom: str | None = Field(None, description="not supported: name a module:function instead")

    @field_validator("custom")
    @classmethod
    def _no_code(cls, custom: str | None) -> None:
        if custom is not None:
            raise ValueError(
                "code in the YAML is not run: put the function in a module and write "
                "action: {name: custom, function: 'module:function'}"
            )
        return None

    @property
    def heartbeat(self) -> float | None:
        """ensemble-python's rule: grow/shrink need a heartbeat, 60 s unless set."""
        if self.logging.heartbeat:
            return self.logging.heartbeat
        if any(rule.action.name in ("grow", "shrink") for rule in self.rules):
            return 60.0
        return None
