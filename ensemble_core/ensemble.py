"""The controller: a job table, one event loop, metrics, rules and the actions they decide.

It runs its asyncio loop in a thread of its own, so Snakemake's status thread, Parsl's submit
thread and the CLI all use the same small thread-safe API: `submit` a JobSpec and get a
`JobHandle`, read or wait for its outcome, `cancel`, `close`. Data flows one way: member ->
events -> controller -> metrics -> rules -> actions -> member.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ensemble_core.errors import EnsembleError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.members.base import Member
from ensemble_core.metrics import Metrics
from ensemble_core.rules.engine import Firing, RuleEngine
from ensemble_core.rules.schema import Action, EnsembleFile
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 10.0


@dataclass(slots=True)
class Attempt:
    """One member job of a logical job."""

    spec: JobSpec
    member_id: Any = None
    record: AttemptRecord = field(default_factory=AttemptRecord)
    submit_error: str | None = None


class JobHandle:
    """A logical job as a front door sees it: every attempt inside, one final outcome."""

    def __init__(self, key: int, spec: JobSpec) -> None:
        self.key = key
        self.attempts: list[Attempt] = [Attempt(spec)]
        self.outcome: Outcome | None = None
        self.reason = ""
        self.log_paths: list[str] = []
        self.cancel_requested = False
        self._lock = threading.Lock()
        self._done = threading.Event()
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
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Outcome | None:
        self._done.wait(timeout)
        return self.outcome

    def add_done_callback(self, callback: Callable[[JobHandle], None]) -> None:
        """Call `callback(handle)` once the outcome is final: at once if it is, else on the
        controller's thread when it becomes final."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def _resolve(self, outcome: Outcome, reason: str, log_paths: list[str]) -> None:
        with self._lock:
            self.outcome, self.reason, self.log_paths = outcome, reason, log_paths
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("a done callback of job %s failed", self.key)


class Ensemble:
    """The ensemble controller. Use `start()`, then the thread-safe API, then `close()`."""

    def __init__(
        self,
        member: Member,
        config: EnsembleFile | None = None,
        *,
        allow_custom: bool = False,
    ) -> None:
        self.member = member
        self.config = config or EnsembleFile()
        self.allow_custom = allow_custom
        self.metrics = Metrics(oldest_pending=self._oldest_pending)
        self.engine = RuleEngine(self.config.rules, self.config.limits)
        self.templates = {group.name: group for group in self.config.jobs}
        self.actions: list[dict[str, Any]] = []
        #: Every logical job with its attempts, for summaries and front doors.
        self.handles: dict[int, JobHandle] = {}
        self.exit = "completed"
        self.stop_reason = ""
        self.started_at = time.time()
        self._keys = itertools.count(1)
        self._active: dict[int, JobHandle] = {}
        self._by_member_id: dict[Any, tuple[JobHandle, Attempt]] = {}
        #: Attempts submitted and not started, oldest first (events arrive in time order).
        self._waiting: dict[Any, Attempt] = {}
        self._orphans: dict[Any, list[JobEvent]] = {}
        self._in_flight = 0
        self._rule_jobs = 0
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ensemble", daemon=True)
        self._finished = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # Thread-safe API --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and the member; fire the `start` rules. Raises member errors."""
        self._thread.start()
        self._call(self._start()).result()

    def submit(self, spec: JobSpec) -> JobHandle:
        """Submit a logical job; its outcome arrives from the member's event stream."""
        if self._loop.is_closed() or not self._thread.is_alive():
            raise EnsembleError("the ensemble is closed: no more jobs can be submitted")
        handle = JobHandle(next(self._keys), spec)
        self._loop.call_soon_threadsafe(self._begin, handle)
        return handle

    def cancel(self, handle: JobHandle) -> None:
        self._loop.call_soon_threadsafe(self._spawn, self._cancel(handle))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the ensemble has run to its end (idle, terminated or at a limit)."""
        return self._finished.wait(timeout)

    def stop(self, reason: str, exit: str = "terminated") -> None:
        """End the ensemble from any thread: cancel what runs, then `wait()` returns."""
        self._loop.call_soon_threadsafe(self._stop, reason, exit)

    def close(self) -> None:
        """Cancel every job still active, wait for their end, and stop the member and loop."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._close()).result(CLOSE_WAIT_SECONDS * 2)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_WAIT_SECONDS)

    def snapshot(self) -> dict[str, Any]:
        """Counts per group and the actions so far (safe to read from any thread, also after
        `close()`, when the counts include the jobs it cancelled)."""
        if not self._thread.is_alive():
            return self._snapshot_now()
        return self._call(self._snapshot()).result(5)

    # Loop internals ---------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, Any]):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error("ensemble: %s", error, exc_info=not isinstance(error, EnsembleError))
            self._stop(f"member error: {error}", "error")

    async def _start(self) -> None:
        await self.member.start(self._on_event)
        self._perform_all(self.engine.start())
        if self.config.heartbeat:
            self._spawn(self._heartbeat(self.config.heartbeat))
        self._spawn(self._intervals())
        self._check_idle()

    async def _snapshot(self) -> dict[str, Any]:
        return self._snapshot_now()

    def _snapshot_now(self) -> dict[str, Any]:
        return {"groups": self.metrics.summary(), "actions": list(self.actions)}

    def _begin(self, handle: JobHandle, by_rule: bool = False) -> None:
        self.handles[handle.key] = handle
        self._active[handle.key] = handle
        if self._stopping:
            self._end_without_running(handle, Outcome.CANCELLED, "cancelled: the ensemble ended")
            return
        self._submit_attempt(handle, handle.attempts[-1], by_rule)

    def _submit_attempt(self, handle: JobHandle, attempt: Attempt, by_rule: bool) -> None:
        """Hand an attempt to the member; jobs that rules submit count against max_jobs."""
        if by_rule:
            if self._rule_jobs >= self.config.limits.max_jobs:
                self._end_without_running(handle, Outcome.CANCELLED, "cancelled: job limit")
                self._stop(
                    f"the rules submitted {self._rule_jobs} jobs, the limit (raise "
                    "limits.max_jobs if that is intended, otherwise a rule is feeding itself)",
                    "limit",
                )
                return
            self._rule_jobs += 1
        self._in_flight += 1
        group = attempt.spec.group
        self.metrics.count(group, "submitted")
        self.metrics.count(group, "pending")
        self._spawn(self._submit(handle, attempt))

    async def _submit(self, handle: JobHandle, attempt: Attempt) -> None:
        try:
            member_id = await self.member.submit(attempt.spec)
        except (EnsembleError, ValueError, OSError) as error:
            self._in_flight -= 1
            self.metrics.count(attempt.spec.group, "pending", -1)
            attempt.submit_error = str(error)
            self._end_without_running(handle, Outcome.FAILED, f"submission failed: {error}")
            return
        self._in_flight -= 1
        attempt.member_id = member_id
        self._by_member_id[member_id] = (handle, attempt)
        for event in self._orphans.pop(member_id, ()):
            self._on_event(event)
        if not self._in_flight:
            self._orphans.clear()
        if (self._stopping or handle.cancel_requested) and member_id in self._by_member_id:
            await self.member.cancel(member_id)

    def _end_without_running(self, handle: JobHandle, outcome: Outcome, reason: str) -> None:
        self._active.pop(handle.key, None)
        handle._resolve(outcome, reason, [])
        self._check_idle()

    def _on_event(self, event: JobEvent) -> None:
        """Every member event passes here, on the loop thread."""
        entry = self._by_member_id.get(event.jobid)
        if entry is None:
            if self._in_flight:
                self._orphans.setdefault(event.jobid, []).append(event)
            return
        handle, attempt = entry
        record = attempt.record
        record.observe(event)
        name = event.name
        group = attempt.spec.group
        if name == "submit":
            self._waiting[event.jobid] = attempt
        elif name == "start":
            self._waiting.pop(event.jobid, None)
            self._started(group, record)
        elif name == "clean":
            self._attempt_ended(handle, attempt)
        if name in self.engine.job_event_names:
            self._perform_all(self.engine.job_event(name, group, handle))

    def _started(self, group: str, record: AttemptRecord) -> None:
        metrics = self.metrics
        metrics.count(group, "pending", -1)
        metrics.count(group, "running")
        if record.submit_time is not None and record.start_time is not None:
            metrics.record(group, "pending", record.start_time - record.submit_time)
        self._perform_all(self.engine.metrics_changed(group, metrics.value))

    def _attempt_ended(self, handle: JobHandle, attempt: Attempt) -> None:
        del self._by_member_id[attempt.member_id]
        self._waiting.pop(attempt.member_id, None)
        record = attempt.record
        outcome = record.outcome
        group = attempt.spec.group
        metrics = self.metrics
        if record.start_time is not None:
            metrics.count(group, "running", -1)
            metrics.count(group, "finished")
            if record.end_time is not None:
                metrics.record(group, "duration", record.end_time - record.start_time)
        else:
            metrics.count(group, "pending", -1)
        metrics.count(group, outcome.value)
        if not outcome.ok and outcome is not Outcome.CANCELLED and outcome is not Outcome.FAILED:
            metrics.count(group, "failed")
        firings = self.engine.job_outcome(outcome.value, group, handle)
        retried = any(self._resubmits(f, handle) for f in firings)
        for firing in firings:
            if firing.rule.action.name != "resubmit":
                self._perform(firing)
        if not retried:
            self._active.pop(handle.key, None)
            handle._resolve(outcome, record.reason, self.member.log_paths(attempt.member_id))
        self._perform_all(self.engine.metrics_changed(group, metrics.value))
        self._check_idle()

    def _resubmits(self, firing: Firing, handle: JobHandle) -> bool:
        """Perform a resubmit firing for the job that just ended; True if it was resubmitted."""
        action = firing.rule.action
        if action.name != "resubmit" or self._stopping or handle.cancel_requested:
            return False
        try:
            spec = handle.spec.scaled(action.changes)
        except ValueError as error:
            self._record(firing, f"not resubmitted: {error}")
            return False
        spec = spec.model_copy(update={"attempt": handle.spec.attempt + 1})
        attempt = Attempt(spec)
        handle.attempts.append(attempt)
        changes = ", ".join(f"{k} {getattr(spec, k)}" for k in action.changes) or "unchanged"
        self._record(firing, f"attempt {spec.attempt}: {changes}", job=handle.key)
        self.metrics.count(spec.group, "resubmitted")
        self._submit_attempt(handle, attempt, by_rule=True)
        return True

    # Actions ----------------------------------------------------------------------------------

    def _perform_all(self, firings: list[Firing]) -> None:
        for firing in firings:
            self._perform(firing)
        if self.engine.exhausted:
            self._stop(self.engine.exhausted, "limit")

    def _perform(self, firing: Firing, action: Action | None = None) -> None:
        action = action or firing.rule.action
        name = action.name
        if name == "submit":
            template = self.templates.get(action.label or "")
            if template is None:
                self._record(firing, f"no job group '{action.label}' to submit", action=action)
                return
            count = action.value or template.count
            spec = template.spec()
            for _ in range(count):
                self._begin(JobHandle(next(self._keys), spec), by_rule=True)
            self._record(firing, f"{count} x {template.name}", action=action)
        elif name == "cancel":
            targets = [
                h
                for h in self._active.values()
                if (h.spec.group == action.label if action.label else h is firing.job)
            ]
            for target in targets:
                self._spawn(self._cancel(target))
            self._record(firing, f"{len(targets)} job(s)", action=action)
        elif name in ("grow", "shrink"):
            self._spawn(self._resize(firing, action))
        elif name == "terminate":
            self._record(firing, "ensemble terminated", action=action)
            self._stop(f"rule {firing.index} terminated the ensemble", "terminated")
        elif name == "custom":
            self._custom(firing, action)
        elif name == "resubmit":
            self._record(firing, "not resubmitted: only an ended job can be", action=action)

    async def _resize(self, firing: Firing, action: Action) -> None:
        value = action.value or 1
        resize = self.member.grow if action.name == "grow" else self.member.shrink
        self._record(firing, await resize(value), action=action)

    def _custom(self, firing: Firing, action: Action) -> None:
        if not self.allow_custom:
            self._record(firing, "skipped: custom actions need --allow-custom", action=action)
            return
        module_name, _, function_name = (action.function or "").partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            self._record(firing, f"cannot load {action.function}: {error}", action=action)
            return
        result = function(rule=firing.rule, group=firing.group, job=firing.job, ensemble=self)
        self._record(firing, f"called {action.function}", action=action)
        if isinstance(result, dict):
            self._perform(firing, Action.model_validate(result))

    def _record(
        self, firing: Firing, detail: str, *, action: Action | None = None, job: Any = None
    ) -> None:
        entry = {
            "rule": firing.index,
            "action": (action or firing.rule.action).name,
            "trigger": firing.rule.trigger,
            "time": round(time.time() - self.started_at, 3),
            "detail": detail,
        }
        if firing.group:
            entry["group"] = firing.group
        if job is not None:
            entry["job"] = job
        self.actions.append(entry)
        log.info("rule %d %s: %s", firing.index, entry["action"], detail)

    async def _cancel(self, handle: JobHandle) -> None:
        """Cancel now, or as soon as the member has the job (its submission may be in flight)."""
        handle.cancel_requested = True
        member_id = handle.member_id
        if member_id is not None and member_id in self._by_member_id:
            await self.member.cancel(member_id)

    # Time-driven rules ------------------------------------------------------------------------

    async def _heartbeat(self, seconds: float) -> None:
        """ensemble-python's heartbeat: record the pending time of waiting jobs, re-check rules."""
        while not self._stopping:
            await asyncio.sleep(seconds)
            now = time.time()
            for attempt in self._waiting.values():
                waited = now - (attempt.record.submit_time or now)
                self.metrics.record(attempt.spec.group, "pending", waited)
            self._perform_all(self.engine.all_metrics(self.metrics.value))

    async def _intervals(self) -> None:
        while not self._stopping:
            delay = self.engine.next_interval()
            if delay is None:
                return
            await asyncio.sleep(delay)
            self._perform_all(self.engine.due_intervals())
            self._check_idle()

    def _oldest_pending(self) -> float:
        """Seconds the longest-waiting job has waited (the `queue.oldest-pending` gauge)."""
        oldest = next(iter(self._waiting.values()), None)
        if oldest is None or oldest.record.submit_time is None:
            return 0.0
        return time.time() - oldest.record.submit_time

    # Ending -----------------------------------------------------------------------------------

    def _check_idle(self) -> None:
        """The ensemble has run to its end when no job is active and no rule can fire again."""
        if self._active or self._in_flight or self._finished.is_set():
            return
        if self._stopping or self.engine.next_interval() is None:
            self._finished.set()

    def _stop(self, reason: str, exit: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.exit, self.stop_reason = exit, reason
        for handle in list(self._active.values()):
            self._spawn(self._cancel(handle))
        self._check_idle()

    async def _close(self) -> None:
        self._stop(self.stop_reason, self.exit)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while (self._active or self._in_flight) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        await self.member.close()
        self._finished.set()
