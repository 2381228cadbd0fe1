"""Job events in Flux's vocabulary (RFC 21) and the outcomes derived from them.

Every member speaks this vocabulary: Flux natively, the local and Kubernetes members by mapping
their own signals onto it. A job's outcome is known at its `clean` event, the last one it gets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

#: The events of RFC 21 that the ensemble core reacts to, in the order a normal job gets them.
JOB_EVENTS = (
    "submit",
    "validate",
    "depend",
    "priority",
    "alloc",
    "start",
    "finish",
    "release",
    "free",
    "clean",
    "exception",
)

#: Further RFC 21 events a member may send; rules may name them, the core only passes them on.
OTHER_JOB_EVENTS = (
    "invalidate",
    "urgency",
    "set-flags",
    "dependency-add",
    "dependency-remove",
    "jobspec-update",
    "resource-update",
    "prolog-start",
    "prolog-finish",
    "epilog-start",
    "epilog-finish",
    "memo",
    "debug",
    "flux-restart",
    "annotations",
)


class Outcome(enum.StrEnum):
    """How a job attempt ended."""

    SUCCESS = "success"
    FAILED = "failed"
    OOM = "oom"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    UNSATISFIABLE = "unsatisfiable"
    NODE_FAILURE = "node-failure"

    @property
    def ok(self) -> bool:
        return self is Outcome.SUCCESS


#: Flux exception types (and the Kubernetes/local equivalents) that decide the outcome.
EXCEPTION_OUTCOMES = {
    "cancel": Outcome.CANCELLED,
    "timeout": Outcome.TIMEOUT,
    "alloc": Outcome.UNSATISFIABLE,
    "oom": Outcome.OOM,
    "node-failure": Outcome.NODE_FAILURE,
    "lost": Outcome.NODE_FAILURE,
}


def exception_outcome(context: dict[str, Any]) -> Outcome:
    """The outcome a fatal exception decides.

    Flux raises no exception of its own for a lost node that a job needs: its job-exec module
    fails the job with type `exec`, severity 0 and the note "node failure on HOST (rank N)"
    (flux-core 0.88 `src/modules/job-exec/bulkexec.c`; recorded in
    tests/fixtures/flux/journal-node-failure.jsonl), so that note marks a node failure. Type
    `exec` is also Flux's type for other execution errors, which stay `failed`. A lost node the
    job can do without gets type `node-failure` with severity 2: not fatal, the job runs on.
    Flux has no `oom` type either; the Flux member raises one from the job shell's report.
    """
    kind = context.get("type", "")
    if kind == "exec" and str(context.get("note", "")).startswith("node failure on "):
        return Outcome.NODE_FAILURE
    return EXCEPTION_OUTCOMES.get(kind, Outcome.FAILED)


@dataclass(slots=True)
class JobEvent:
    """One event of one member job, as Flux's job journal delivers it."""

    jobid: Any
    name: str
    timestamp: float
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> JobEvent:
        return cls(record["id"], record["name"], record["timestamp"], record.get("context") or {})


def exit_code(status: int) -> int:
    """The shell-style exit code of a wait status (Flux's `finish` status)."""
    if status & 0x7F:
        return 128 + (status & 0x7F)
    return status >> 8


@dataclass(slots=True)
class AttemptRecord:
    """What the event stream has told about one member job so far."""

    submit_time: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    status: int | None = None
    exception: dict[str, Any] | None = None
    #: What the job handed back with its `finish` (context `result`: a warm task's result,
    #: `members/warm_result.py`), for its front door; None for jobs that hand back nothing.
    result: bytes | None = None

    def observe(self, event: JobEvent) -> None:
        name = event.name
        if name == "submit":
            self.submit_time = event.timestamp
        elif name == "start":
            self.start_time = event.timestamp
        elif name == "finish":
            self.status = event.context.get("status", 0)
            self.result = event.context.get("result")
            self.end_time = event.timestamp
        elif name == "exception" and event.context.get("severity", 0) == 0 and not self.exception:
            self.exception = event.context
        elif name == "clean" and self.end_time is None:
            self.end_time = event.timestamp

    @property
    def outcome(self) -> Outcome:
        """The outcome once `clean` was seen: a fatal exception decides, else the exit status."""
        if self.exception is not None:
            return exception_outcome(self.exception)
        return Outcome.SUCCESS if self.status == 0 else Outcome.FAILED

    @property
    def exit_code(self) -> int | None:
        return None if self.status is None else exit_code(self.status)

    @property
    def reason(self) -> str:
        """One sentence a person reads: why the job ended as it did."""
        outcome = self.outcome
        if self.exception is not None:
            note = self.exception.get("note") or self.exception.get("type")
            return note if note.startswith(outcome.value) else f"{outcome.value}: {note}"
        if outcome is Outcome.SUCCESS:
            return "success"
        if self.status is None:
            return "failed: the job ended without a finish status"
        return f"failed with exit code {exit_code(self.status)}"
