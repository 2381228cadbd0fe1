"""The rules YAML as pydantic models: ensemble-python's format, grown.

Files written for ensemble-python validate unchanged. `ensemble schema` prints the JSON Schema of
`EnsembleFile` for editors.
"""

from __future__ import annotations

import re
import shlex
import string
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ensemble_core import bounds
from ensemble_core.bounds import shown
from ensemble_core.errors import ConfigError
from ensemble_core.events import JOB_EVENTS, OTHER_JOB_EVENTS
from ensemble_core.matching import MEMBER_ATTRIBUTE, POLICIES, REQUIRES_ATTRIBUTE
from ensemble_core.rules.conditions import (
    CONDITION_HELP,
    DURATION_HELP,
    parse_condition,
    parse_duration,
)
from ensemble_core.rules.metric_names import check_metric_name, did_you_mean
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
ACTIONS = ("submit", "resubmit", "cancel", "grow", "shrink", "terminate", "custom", "route")
#: The actions that may name a member (of several: `members:`).
MEMBER_ACTIONS = ("submit", "resubmit", "grow", "shrink", "route")

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


#: The bound of each resource a `resubmit` may change, by JobSpec field.
RESOURCE_BOUNDS = {
    "memory_mb": bounds.MEGABYTES,
    "disk_mb": bounds.MEGABYTES,
    "walltime": bounds.DURATION,
    "cores_per_task": bounds.CORES,
    "gpus_per_task": bounds.GPUS,
    "nodes": bounds.NODES,
    "tasks": bounds.TASKS,
}
_CHANGE = re.compile(r"^\s*(?P<op>[x*+]?)\s*(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _within(bound: bounds.Bound) -> BeforeValidator:
    """A validator refusing what is not a number in `bound` (booleans included)."""

    def check(value: Any) -> Any:
        if value is not None:
            problem = bound.problem(value)
            if problem:
                raise ValueError(problem)
        return value

    return BeforeValidator(check)


def _duration_within(bound: bounds.Bound, *, zero: bool = False) -> BeforeValidator:
    """A duration in `bound` (or exactly 0, meaning none, if `zero`)."""

    def check(value: Any) -> float:
        seconds = parse_duration(value)
        problem = None if zero and seconds == 0 else bound.problem(seconds)
        if problem:
            raise ValueError(problem)
        return seconds

    return BeforeValidator(check)


Duration = Annotated[float, _duration_within(bounds.DURATION), Field(description=DURATION_HELP)]
Period = Annotated[float, _duration_within(bounds.PERIOD), Field(description=DURATION_HELP)]
#: ensemble-python's heartbeat: 0 means none.
Heartbeat = Annotated[
    float, _duration_within(bounds.PERIOD, zero=True), Field(description=DURATION_HELP)
]


class _Strict(BaseModel):
    """Unknown keys refused. Each model's validator is built when it is first used on its own
    (`defer_build`): validating a file builds `EnsembleFile`'s, which holds the schemas of
    every section, and the models of the sections then need none of their own until something
    validates one alone (an operator's `Action`)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Action(_Strict):
    """What a rule does when it fires, and how often it may."""

    name: Literal[ACTIONS] = Field(description="the action")  # type: ignore[valid-type]
    label: str | None = Field(None, description="submit/cancel: the job group")
    value: int | None = Field(None, description="grow/shrink: nodes; submit: job count")
    resources: dict[str, int | float | str] = Field(
        default_factory=dict,
        description='resubmit: changes such as {mem_mb: "x2", walltime: "x1.5", cores: 4}',
    )
    function: str | None = Field(None, description="custom: 'module:function' to call")
    member: str | None = Field(
        None,
        description="submit/resubmit: the member the jobs go to; grow/shrink: the member to "
        "resize; route: where the group's next jobs go (none: back to where they would go)",
    )
    repetitions: Annotated[int, _within(bounds.REPETITIONS)] = Field(
        1, description="times the action may run (resubmit: per job, others: per rule)"
    )
    backoff: Annotated[int | None, _within(bounds.BACKOFF)] = Field(
        None, description="evaluations skipped between runs"
    )
    cooldown: Duration | None = Field(None, description="time that must pass between runs")

    @field_validator("value")
    @classmethod
    def _value_used(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if value is not None and name not in (None, "submit", "grow", "shrink"):
            raise ValueError(f"the {name} action takes no value (submit, grow and shrink do)")
        return value

    @field_validator("resources")
    @classmethod
    def _known_resources(cls, resources: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if resources and name not in (None, "resubmit"):
            raise ValueError(f"the {name} action changes no resources (resubmit does)")
        unknown = [key for key in resources if key not in RESOURCE_ALIASES]
        if unknown:
            raise ValueError(
                f"unknown resource {', '.join(unknown)}: use one of {', '.join(RESOURCE_ALIASES)}"
            )
        for key, change in resources.items():
            problem = change_problem(RESOURCE_ALIASES[key], change)
            if problem:
                raise ValueError(f"{key}: {problem}")
        return resources

    @field_validator("member")
    @classmethod
    def _member_used(cls, member: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if member is not None and name not in (None, *MEMBER_ACTIONS):
            raise ValueError(f"the {name} action names no member ({', '.join(MEMBER_ACTIONS)} do)")
        return member

    @field_validator("function")
    @classmethod
    def _module_function(cls, function: str | None) -> str | None:
        if function is not None and not _FUNCTION.match(function):
            raise ValueError(
                f"{shown(function)} is not 'module:function' (e.g. 'my_actions:on_oom'): name "
                "an importable module and a function in it"
            )
        return function

    @field_validator("repetitions")
    @classmethod
    def _resubmits_per_job(cls, repetitions: int, info: ValidationInfo) -> int:
        if info.data.get("name") == "resubmit":
            problem = bounds.RESUBMITS.problem(repetitions)
            if problem:
                raise ValueError(f"a resubmit's repetitions (per job) {problem}")
        return repetitions

    @field_validator("value", mode="before")
    @classmethod
    def _value_within(cls, value: Any, info: ValidationInfo) -> Any:
        """Jobs for a submit, nodes for a grow or shrink: each has its bound."""
        bound = bounds.SUBMIT_VALUE if info.data.get("name") == "submit" else bounds.NODES
        problem = None if value is None else bound.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _needs(self) -> Action:
        if self.name == "custom" and not self.function:
            raise ValueError(
                "a custom action needs function: 'module:function' (code in the YAML is not run)"
            )
        if self.function is not None and self.name != "custom":
            raise ValueError(f"the {self.name} action calls no function (custom does)")
        if self.name == "submit" and not self.label:
            raise ValueError("a submit action needs label: the job group to submit")
        if self.name == "route" and not self.label:
            raise ValueError("a route action needs label: the job group whose jobs it routes")
        return self

    @property
    def changes(self) -> dict[str, int | float | str]:
        """`resources` under JobSpec field names."""
        return {RESOURCE_ALIASES[key]: change for key, change in self.resources.items()}


def change_problem(field: str, change: Any) -> str | None:
    """Why a resource change ("x2", "+512", 4096) is not one, or None if it is."""
    bound = RESOURCE_BOUNDS[field]
    if isinstance(change, str):
        match = _CHANGE.match(change)
        if match is None:
            return f'{shown(change)} is not a change: write "x2" (multiply), "+512" (add) or 4096'
        amount = float(match["number"])
        if match["op"] in ("x", "*"):
            problem = bounds.FACTOR.problem(amount)
            return f"the factor {problem}" if problem else None
        if match["op"] == "+":
            problem = bound.problem(amount) if amount > 0 else "must be more than 0"
            return f"the amount added {problem}" if problem else None
        change = amount
    problem = bound.problem(change)
    if problem is None and field == "walltime" and change == 0:
        problem = "must be more than 0"
    return problem


class Rule(_Strict):
    """A trigger, an optional filter and condition, and an action."""

    trigger: str = Field(description="start, interval, metric, job-<event> or a job outcome")
    name: str | None = Field(
        None, description="metric: the metric name; job triggers: the group (alias of group)"
    )
    group: str | None = Field(None, description="job triggers: only jobs of this group")
    when: int | float | str | None = Field(None, description=f"metric: {CONDITION_HELP}")
    every: Period | None = Field(None, description="interval: how often the rule fires")
    action: Action

    @field_validator("trigger")
    @classmethod
    def _known_trigger(cls, trigger: str) -> str:
        if trigger not in TRIGGERS:
            raise ValueError(
                f"unknown trigger '{trigger}': use start, interval, metric, "
                f"job-<event> ({', '.join(JOB_EVENTS)}) or an outcome "
                f"({', '.join(OUTCOME_TRIGGERS)})" + did_you_mean(trigger, TRIGGERS)
            )
        return trigger

    @field_validator("name")
    @classmethod
    def _metric_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is not None and info.data.get("trigger") == "metric":
            check_metric_name(name)
        return name

    @field_validator("when", mode="before")
    @classmethod
    def _valid_when(cls, when: Any, info: ValidationInfo) -> Any:
        trigger = info.data.get("trigger")
        if when is not None and trigger not in (None, "metric"):
            raise ValueError(f"only a metric rule has a condition; a {trigger} rule has none")
        if when is not None:
            parse_condition(when)
        return when

    @field_validator("every")
    @classmethod
    def _interval_only(cls, every: float | None, info: ValidationInfo) -> float | None:
        trigger = info.data.get("trigger")
        if every is not None and trigger not in (None, "interval"):
            raise ValueError(f"only an interval rule has every:; a {trigger} rule has none")
        return every

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


#: Characters with no meaning to a shell's word splitting beyond separating words at spaces.
_PLAIN = frozenset(string.ascii_letters + string.digits + " \t\n\r!#$%&()*+,-./:;<=>?@[]^_`{|}~")


def split_command(command: str) -> list[str]:
    """`shlex.split`, without its cost for the common command that has no quote or escape."""
    if _PLAIN.issuperset(command):
        return command.split()
    return shlex.split(command)


class JobGroup(_Strict):
    """A group of identical jobs that `submit` actions start (ensemble files only)."""

    name: str = Field(min_length=1)
    command: str | list[str] | None = None
    script: str | None = Field(
        None,
        description="a Slurm, PBS, LSF or Flux batch script run as it is, instead of a command: "
        "its directives give the resources",
    )
    count: Annotated[int, _within(bounds.JOBS_PER_SUBMIT)] = Field(1, description="jobs per submit")
    nodes: Annotated[int | None, _within(bounds.NODES)] = 1
    tasks: Annotated[int | None, _within(bounds.TASKS)] = None
    cores: Annotated[int, _within(bounds.CORES)] = Field(1, description="cores per task")
    gpus: Annotated[int, _within(bounds.GPUS)] = Field(0, description="gpus per task")
    memory: Annotated[int | None, _within(bounds.MEGABYTES)] = Field(
        None, description="MB for the whole job"
    )
    duration: Duration | None = Field(None, description="walltime; 0 or unset is unlimited")
    workdir: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    member: str | None = Field(None, description="the member the jobs go to (of members:)")
    requires: list[str] = Field([], description="features the member must offer (of members:)")

    @field_validator("name")
    @classmethod
    def _not_a_member(cls, name: str) -> str:
        if name.startswith("@"):
            raise ValueError(f"'{name}': '@' starts a member's metrics (count.@cloud.running)")
        return name

    @field_validator("command")
    @classmethod
    def _runnable(cls, command: str | list[str]) -> list[str]:
        """The argv: a string is split as a shell would (without running one)."""
        try:
            argv = split_command(command) if isinstance(command, str) else command
        except ValueError as error:
            raise ValueError(f"{shown(command)} cannot be split like a shell: {error}") from None
        if not argv or not argv[0]:
            raise ValueError("the command is empty: give the program to run and its arguments")
        if any("\0" in part for part in argv):
            raise ValueError("the command holds a NUL character, which no program can receive")
        return argv

    @field_validator("environment")
    @classmethod
    def _names(cls, environment: dict[str, str]) -> dict[str, str]:
        for name, value in environment.items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise ValueError(
                    f"{shown(name)}: an environment variable's name is not empty and holds "
                    "no '=', and neither holds a NUL character"
                )
        return environment

    _script_job: JobSpec | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _command_or_script(self) -> JobGroup:
        """A command, or a batch script whose directives give the resources (read once, here)."""
        if self.script is None:
            if self.command is None:
                raise ValueError("missing key 'command' (or 'script', a batch script); add it")
            return self
        others = sorted(self.model_fields_set - {"name", "count", "script", "member", "requires"})
        if others:
            raise ValueError(
                f"{others[0]}: a group with a script takes its command and resources from the "
                f"script's directives; remove {others[0]}"
            )
        try:
            from ensemble_core.translate.jobscript import job_from_script  # scripts only

            self._script_job = job_from_script(self.script)
        except ConfigError as error:
            raise ValueError(f"script: {error}") from None
        return self

    @model_validator(mode="after")
    def _spec_builds(self) -> JobGroup:
        """Build the spec now, so that what validates also runs."""
        try:
            self.spec()
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise ValueError(f"its job would be invalid: {where}: {problem['msg']}") from None
        return self

    def spec(self) -> JobSpec:
        """The JobSpec of one job of this group (ensemble-python: one task per node by default)."""
        if self._script_job is not None:
            update = {"group": self.name, "attributes": self._attributes()}
            return self._script_job.model_copy(update=update)
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
            attributes=self._attributes(),
        )

    def _attributes(self) -> dict[str, Any]:
        """Where the group's jobs ask to run, and what they require (of several members)."""
        attributes: dict[str, Any] = {}
        if self.member:
            attributes[MEMBER_ATTRIBUTE] = self.member
        if self.requires:
            attributes[REQUIRES_ATTRIBUTE] = list(self.requires)
        return attributes


class Logging(_Strict):
    debug: bool = False
    heartbeat: Heartbeat | None = Field(
        None, description="re-evaluate metric rules (and record pending time) this often"
    )


class Limits(_Strict):
    """Global limits, so that a rule set that feeds itself stops."""

    max_actions: Annotated[int, _within(bounds.LIMIT)] = Field(
        1000, description="actions performed by all rules together"
    )
    max_jobs: Annotated[int, _within(bounds.LIMIT)] = Field(
        10000, description="member jobs submitted, resubmissions included"
    )


class Routing(_Strict):
    """How a job finds its member among several (docs/several-members.md)."""

    policy: Literal[POLICIES] = Field(  # type: ignore[valid-type]
        "first",
        description="among the members that can run a job: first (listed order), "
        "least-backlog (fewest jobs waiting) or least-pending (lowest recent pending time)",
    )


class EnsembleFile(_Strict):
    """An ensemble file (`ensemble run`) or a shared rules file (Snakemake, Parsl)."""

    #: `[]`, not `default_factory=list`: pydantic copies a default list for each model all the
    #: same, and asks a factory for its signature, which for `list` means tokenizing its text
    #: signature (compiling the tokenizer's expressions: 2 ms of a run's start).
    jobs: list[JobGroup] = []
    rules: list[Rule] = []
    logging: Logging = Field(default_factory=Logging)
    limits: Limits = Field(default_factory=Limits)
    member: dict[str, Any] = Field(
        default_factory=dict, description="member settings, e.g. {name: local, cores: 4}"
    )
    members: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="several members by name, each with its settings, features and offers, "
        "e.g. {hpc: {name: flux}, here: {name: local, features: [x86_64]}}",
    )
    default: str | None = Field(None, description="of members: where unpinned jobs go first")
    routing: Routing = Field(default_factory=Routing)
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
