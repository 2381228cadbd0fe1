"""Logical jobs as front doors see them: a handle, its attempts, one final outcome.

A handle resolves exactly once, from whichever thread gets there first (the controller's loop,
or a `close()` that gives up on a member that no longer answers); later resolutions are ignored.
The controller's own thread may never block on a handle or on the controller: that would wait
for the very loop that is blocked, so those calls raise at once instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ensemble_core.errors import EnsembleError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

#: RFC 21 events a job gets at most once, as bits: a second one is a repetition to ignore.
_ONCE = {
    name: 1 << bit
    for bit, name in enumerate(
        ("submit", "validate", "depend", "alloc", "start", "finish", "free", "clean")
    )
}


def repeatable(names: Iterable[str]) -> frozenset[str]:
    """Those of `names` an attempt keeps in `repeats` (the others count once, in `seen`)."""
    return frozenset(name for name in names if name not in _ONCE)


class ControllerThread(threading.Thread):
    """The thread an ensemble's event loop runs on (recognised by `on_controller_thread`)."""


def on_controller_thread() -> bool:
    return isinstance(threading.current_thread(), ControllerThread)


def refuse_on_controller_thread(call: str) -> None:
    """Raise at once where blocking would deadlock: on the thread that would have to answer."""
    if on_controller_thread():
        raise EnsembleError(
            f"{call} was called on the ensemble's own thread (from a custom action or a done "
            "callback) where it would wait for itself: use ensemble.stop(...) or handle.done()"
        )


@dataclass(slots=True)
class Attempt:
    """One member job of a logical job.

    `phase`: 0 queued for submission, 1 submitted, 2 started, 3 ended.
    """

    spec: JobSpec
    member_id: Any = None
    record: AttemptRecord = field(default_factory=AttemptRecord)
    phase: int = 0
    #: The once-only events counted so far, as bits (kept in the state journal).
    seen: int = 0
    #: Names this submission across controllers (set when the run keeps a state journal).
    token: str | None = None
    #: The other events counted so far, as (name, timestamp) (kept in the state journal).
    repeats: tuple[tuple[str, float], ...] = ()
    #: With several members, the metrics group (`@name`) of the member that runs it: set when
    #: the controller starts following it, read at its start and end.
    member_group: str | None = None

    def repeated(self, event: JobEvent) -> bool:
        """True for an event this attempt has had already. A member that resumes its stream
        (Flux's journal, a Kubernetes re-list) may send an event twice; it must count once."""
        bit = _ONCE.get(event.name)
        if bit is not None:
            if self.seen & bit:
                return True
            self.seen |= bit
            return False
        key = (event.name, event.timestamp)
        if key in self.repeats:
            return True
        self.repeats += (key,)
        return False


class JobHandle:
    """A logical job: every attempt inside, one final outcome."""

    __slots__ = (
        "__weakref__",
        "_callbacks",
        "_event",
        "_lock",
        "attempts",
        "cancel_requested",
        "identity",
        "key",
        "log_paths",
        "outcome",
        "reactive",
        "reason",
    )

    def __init__(
        self, key: int, spec: JobSpec, *, reactive: bool = False, identity: str | None = None
    ) -> None:
        self.key = key
        #: A front door's name for the job (Snakemake: rule and wildcards), to find it again
        #: after a restart; None for jobs nobody will ask for by name.
        self.identity = identity
        self.attempts: list[Attempt] = [Attempt(spec)]
        #: Set last when the job resolves: not None means reason and log_paths are final.
        self.outcome: Outcome | None = None
        self.reason = ""
        self.log_paths: list[str] = []
        self.cancel_requested = False
        #: Submitted by a rule that reacts to jobs or metrics (counts against limits.max_jobs).
        self.reactive = reactive
        self._lock = threading.Lock()
        #: Made only when a thread waits: most handles (a million a run) are never waited on.
        self._event: threading.Event | None = None
        self._callbacks: list[Callable[[JobHandle], None]] = []

    @property
    def spec(self) -> JobSpec:
        return self.attempts[-1].spec

    @property
    def member_id(self) -> Any:
        return self.attempts[-1].member_id

    @property
    def exit_code(self) -> int | None:
        return self.attempts[-1].record.exit_code

    def done(self) -> bool:
        return self.outcome is not None

    def wait(self, timeout: float | None = None) -> Outcome | None:
        """The outcome, once final (None if `timeout` passes first)."""
        if self.outcome is not None:
            return self.outcome
        refuse_on_controller_thread("JobHandle.wait()")
        with self._lock:
            if self.outcome is not None:
                return self.outcome
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        event.wait(timeout)
        return self.outcome

    def add_done_callback(self, callback: Callable[[JobHandle], None]) -> None:
        """Call `callback(handle)` once the outcome is final: at once if it is, else on the
        thread that resolves it (the controller's, as a rule)."""
        with self._lock:
            if self.outcome is None:
                self._callbacks.append(callback)
                return
        _call_back(callback, self)

    def resolve(self, outcome: Outcome, reason: str, log_paths: list[str]) -> bool:
        """Make the outcome final; False (and nothing changes) if it already was."""
        with self._lock:
            if self.outcome is not None:
                return False
            self.reason, self.log_paths = reason, log_paths
            self.outcome = outcome
            event, self._event = self._event, None
            callbacks, self._callbacks = self._callbacks, []
        if event is not None:
            event.set()
        for callback in callbacks:
            _call_back(callback, self)
        return True


def _call_back(callback: Callable[[JobHandle], None], handle: JobHandle) -> None:
    try:
        callback(handle)
    except Exception:
        log.exception("a done callback of job %s failed", handle.key)
