"""The controller: a job table, one event loop, metrics, rules and the actions they decide.

It runs its asyncio loop in a thread of its own, so Snakemake's status thread, Parsl's submit
thread and the CLI all use the same small thread-safe API: `submit` a JobSpec and get a
`JobHandle`, read or wait for its outcome, `cancel`, `close`. Data flows one way: member ->
events -> controller -> metrics -> rules -> actions -> member.

Every job gets an outcome, whatever fails. A member error on one job (its submission, its
cancel) ends that job with the member's words; an action that fails is recorded as that action's
result (see `actions.py`); an error while an event is handled is logged and, if it concerned a
job's end, ends that job. Only a member that reports its event stream lost for good ends the
ensemble, and `close()` resolves whatever the member never confirmed within its bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ensemble_core.actions import Actions, one_line
from ensemble_core.direct_intake import DirectIntake
from ensemble_core.errors import ConfigError, EnsembleError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.jobs import (
    Attempt,
    ControllerThread,
    JobHandle,
    on_controller_thread,
    repeatable,
)
from ensemble_core.jobs import refuse_on_controller_thread as _refuse_here
from ensemble_core.matching import sent_to
from ensemble_core.members.base import TOKEN_ATTRIBUTE, Member
from ensemble_core.members.router import RouterMember
from ensemble_core.metrics import Metrics
from ensemble_core.orphans import OrphanEvents
from ensemble_core.resume import resume
from ensemble_core.rules.engine import Firing, RuleEngine, metric_group
from ensemble_core.rules.schema import Action, EnsembleFile, Rule
from ensemble_core.spec import JobSpec
from ensemble_core.state import CHECK_SECONDS, StateJournal

log = logging.getLogger(__name__)

#: How long `close()` waits for the member to confirm the end of the jobs it cancels.
CLOSE_WAIT_SECONDS = 10.0
#: Submissions to the member that may be in flight at once (members that wait on a network).
SUBMITTERS = 16
#: How long a submitter hands jobs to the member before it lets events (and a stop) in.
SUBMIT_SLICE_SECONDS = 0.01
#: Jobs a submitter takes at once: with a state journal, their intent is written in one go.
SUBMIT_BATCH = 512
#: How often rules on gauges that change with time alone (queue.oldest-pending) are evaluated.
GAUGE_TICK_SECONDS = 0.025


@dataclass(slots=True)
class _Batch:
    """Jobs of a `submit` action not yet handed to the member: handles are made one at a time,
    so a group of a million jobs costs memory only for the jobs the member holds."""

    spec: JobSpec
    left: int
    reactive: bool


class Ensemble:
    """The ensemble controller. Use `start()`, then the thread-safe API, then `close()`."""

    def __init__(
        self,
        member: Member,
        config: EnsembleFile | None = None,
        *,
        allow_custom: bool = False,
        state: StateJournal | None = None,
    ) -> None:
        self.member = member
        #: With several members: the metrics pseudo-group (`@name`) of a member job's member.
        self._member_group = member.member_group if isinstance(member, RouterMember) else None
        #: Where the run is recorded so that a restarted controller can resume it (or None).
        self.journal = state
        self._journal_dirty = None if state is None else state.dirty_jobs
        self.config = config or EnsembleFile()
        self.allow_custom = allow_custom
        self.metrics = Metrics(oldest_pending=self._oldest_pending)
        self.engine = RuleEngine(self.config.rules, self.config.limits)
        if state is not None:
            state.kept_repeats = repeatable(self.engine.job_event_names)
        #: Whether a member's statistics are recorded (`mean.@cloud-pending`): only when a rule
        #: reads one; counters per member are cheap, a statistic costs what a group's does.
        #: Without a rule on a member's metrics, a member's counters changing is not reported
        #: to the rules either: there is nothing for them to look at.
        reads_members, reads_statistics = _member_metrics_read(self.config.rules)
        self._member_series = self._member_group is not None and reads_statistics
        self.metrics.report_members = reads_members
        self.templates = {group.name: group for group in self.config.jobs}
        self.exit = "completed"
        self.stop_reason = ""
        self.started_at = time.time()
        self._actions = Actions(self)
        self._keys = itertools.count(1)
        #: Logical jobs without an outcome yet (the loop's own).
        self._active: dict[int, JobHandle] = {}
        self._by_member_id: dict[Any, tuple[JobHandle, Attempt]] = {}
        #: With several members: their jobs by each member's own id too, so that their events
        #: come straight here (direct_intake.py).
        self._direct: DirectIntake | None = None
        if isinstance(member, RouterMember):
            self._direct = DirectIntake(member, self._handle_event, self._event_failed)
            member.take_events_by(self._direct.intake)
        #: Attempts submitted and not started, oldest first (events arrive in time order).
        self._waiting: dict[Any, Attempt] = {}
        self._orphans = OrphanEvents()
        self._to_submit: deque[tuple[JobHandle, Attempt] | _Batch] = deque()
        #: Open jobs of a resumed run that a front door may ask for again by identity.
        self._by_identity: dict[str, JobHandle] = {}
        #: Attempts taken for submission whose member call has not returned.
        self._submitting = 0
        #: Adoptions in flight (a resumed run): events of ids not known yet are held meanwhile.
        self._adopting = 0
        self._submitters = 0
        self._reactive_jobs = 0
        self._cancel_errors: dict[int, str] = {}
        self._stopping = False
        self._intake: list[JobHandle] = []
        self._intake_lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = ControllerThread(target=self._run_loop, name="ensemble", daemon=True)
        self._finished = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        member.on_lost = self._member_lost

    @property
    def actions(self) -> list[dict[str, Any]]:
        """What the rules did, in order (the latest `KEPT_ACTIONS`): each entry's `detail` is
        the action's result."""
        return list(self._actions.entries)

    # Thread-safe API --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and the member; fire the `start` rules. Raises member errors
        (after stopping what it started)."""
        _refuse_here("Ensemble.start()")
        self._thread.start()
        try:
            self._call(self._start()).result()
        except BaseException:
            self.close()
            raise

    def submit(self, spec: JobSpec, identity: str | None = None) -> JobHandle:
        """Submit a logical job; its outcome arrives from the member's event stream.

        `identity` names the job for a front door (Snakemake: its rule and wildcards): when a
        resumed run has an open job of that identity, the handle follows that job instead of
        submitting it again."""
        handle = JobHandle(next(self._keys), spec, identity=identity)
        with self._intake_lock:
            if self._closed or not self._thread.is_alive():
                raise EnsembleError("the ensemble is closed: no more jobs can be submitted")
            self._intake.append(handle)
            first = len(self._intake) == 1
        if first:
            self._loop.call_soon_threadsafe(self._take_intake)
        return handle

    def follows(self, identity: str) -> bool:
        """Whether a job submitted now with `identity` would follow an open job of the run
        before (see `submit`) rather than start anew. Any thread: resumption is over once
        `start` returns, and only that job's own submission takes it."""
        return identity in self._by_identity

    def cancel(self, handle: JobHandle) -> None:
        """Cancel a job from any thread; its outcome then arrives as for any other end."""
        self._threadsafe(self._cancel_many, [handle])

    def request_action(self, action: dict[str, Any], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Perform an action asked for from outside (`ensemble action`, an operator): what it
        recorded, as rule -1 with the trigger `operator`. A ConfigError if it is no action."""
        _refuse_here("Ensemble.request_action()")
        try:
            checked = Action.model_validate(action)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "action"
            raise ConfigError(f"{where}: {problem['msg'].removeprefix('Value error, ')}") from None
        return self._call(self._operator_action(checked)).result(timeout)

    async def _operator_action(self, action: Action) -> list[dict[str, Any]]:
        rule = Rule.model_construct(
            trigger="operator", name=None, group=None, when=None, every=None, action=action
        )
        before = sum(self._actions.counts.values())
        self._actions.perform(Firing(-1, rule, group=action.label))
        while self._actions.running:
            await asyncio.sleep(0.01)
        recorded = sum(self._actions.counts.values()) - before
        return list(self._actions.entries)[-recorded:] if recorded else []

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every job queued so far was handed to the member (before a detach)."""
        _refuse_here("Ensemble.settle()")
        try:
            self._call(self._settled()).result(timeout)
        except TimeoutError:
            return False
        return True

    async def _settled(self) -> None:
        while self._to_submit or self._submitting:
            await asyncio.sleep(0.02)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the ensemble has run to its end (idle, terminated or at a limit)."""
        _refuse_here("Ensemble.wait()")
        return self._finished.wait(timeout)

    def stop(self, reason: str, exit: str = "terminated") -> None:
        """End the ensemble from any thread: cancel what runs, then `wait()` returns."""
        self._threadsafe(self.end, reason, exit)

    def close(self, *, detach: bool = False) -> None:
        """Cancel every job still active, wait (bounded) for their end, stop the member and the
        loop. Every handle is resolved when it returns.

        `detach` (with a state journal) leaves the jobs running on the queue instead: the
        journal keeps them open for `ensemble attach` or the next run; the handles here resolve
        as cancelled, saying so."""
        _refuse_here("Ensemble.close()")
        with self._intake_lock:
            self._closed = True
        if self._thread.is_alive():
            try:
                closing = self._detach() if detach and self.journal else self._close()
                self._call(closing).result(CLOSE_WAIT_SECONDS * 3)
            except Exception as error:
                log.error("ensemble: closing did not finish: %s", one_line(error))
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(CLOSE_WAIT_SECONDS)
        if not self._thread.is_alive() and not self._loop.is_closed():
            # Closed here, not by the garbage collector at exit: that may find the loop's
            # self-pipe closed already and print a traceback after the run's last line.
            self._loop.close()
        self._resolve_leftovers("cancelled: the ensemble was closed before the job ended")
        self._finished.set()

    def snapshot(self) -> dict[str, Any]:
        """Counts per group and the actions so far (from any thread, also after `close()`)."""
        if on_controller_thread() or not self._thread.is_alive():
            return self._snapshot_now()
        return self._call(self._snapshot()).result(5)

    # The loop ---------------------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Coroutine[Any, Any, Any]):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _threadsafe(self, function: Any, *args: Any) -> None:
        # A closed loop raises RuntimeError: close() has resolved every job already.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(function, *args)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine on the loop; the controller cancels what is left when it closes."""
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ensemble: internal error", exc_info=task.exception())

    async def _start(self) -> None:
        saved = self.journal.previous() if self.journal is not None else None
        await self.member.start(self._on_event)
        if saved is not None:
            await resume(self, saved)
        else:
            if self.journal is not None:
                self.journal.forget_previous()
                self.journal.set_meta(started_at=self.started_at)
            self._perform_all(self.engine.start())
        if self.journal is not None:
            self.spawn(self._flush_periodically())
        if self.config.heartbeat:
            self.spawn(self._heartbeat(self.config.heartbeat))
        if self.engine.time_rules:
            self.spawn(self._tick_gauges())
        self.spawn(self._intervals())
        self.check_idle()

    async def _snapshot(self) -> dict[str, Any]:
        return self._snapshot_now()

    def _snapshot_now(self) -> dict[str, Any]:
        snapshot = {
            "groups": self.metrics.summary(),
            "actions": self.actions,
            "action_counts": self._actions.summary(),
        }
        if self._member_group is not None:
            snapshot["members"] = self.metrics.summary(members=True)
        return snapshot

    # Submission -------------------------------------------------------------------------------

    def _take_intake(self) -> None:
        with self._intake_lock:
            handles, self._intake = self._intake, []
        for handle in handles:
            self._begin(handle)
        self._evaluate_metrics()
        self.check_idle()

    def _begin(self, handle: JobHandle) -> None:
        if handle.identity is not None and self._follow_resumed(handle):
            return
        self._active[handle.key] = handle
        if self._stopping:
            self._finish_job(handle, Outcome.CANCELLED, f"cancelled: {self._ended_why()}")
            return
        self._finished.clear()  # a front door's ensemble is idle between its jobs, not over
        self._enqueue(handle, handle.attempts[-1])

    def _follow_resumed(self, handle: JobHandle) -> bool:
        """Let `handle` follow the resumed job of its identity, if there is one (once)."""
        resumed = self._by_identity.pop(handle.identity or "", None)
        if resumed is None:
            return False
        handle.attempts = resumed.attempts
        resumed.add_done_callback(
            lambda done: handle.resolve(done.outcome, done.reason, done.log_paths)
        )
        log.info("job %s follows job %s of the run before", handle.key, resumed.key)
        return True

    def submit_group(self, spec: JobSpec, count: int, *, reactive: bool) -> int:
        """Queue `count` jobs of one spec for submission (a `submit` action); how many."""
        if self._stopping or count <= 0:
            return 0
        self._to_submit.append(_Batch(spec, count, reactive))
        self._wake_submitters()
        return count

    def _enqueue(self, handle: JobHandle, attempt: Attempt) -> None:
        self._count_submitted(attempt.spec.group)
        self._to_submit.append((handle, attempt))
        self._wake_submitters()

    def _count_submitted(self, group: str) -> None:
        self.metrics.count(group, "submitted")
        self.metrics.count(group, "pending")

    def _wake_submitters(self) -> None:
        if self._submitters < SUBMITTERS and self._to_submit:
            self._submitters += 1
            self.spawn(self._submitter())

    async def _submitter(self) -> None:
        """Hand queued jobs to the member, letting events in between slices of work. With a
        state journal, the intent to submit each batch is written before the member sees it."""
        try:
            slice_ends = time.monotonic() + SUBMIT_SLICE_SECONDS
            while self._to_submit and not self._stopping:
                taken = []
                while self._to_submit and len(taken) < SUBMIT_BATCH and not self._stopping:
                    item = self._take_next()
                    if item is not None:
                        taken.append(item)
                if self.journal is not None:
                    await self.durable(self._intend(taken))
                for handle, attempt in taken:
                    if self._stopping:
                        why = f"cancelled: {self._ended_why()}"
                        self._unsubmitted(handle, attempt, Outcome.CANCELLED, why)
                    else:
                        await self._submit(handle, attempt)
                if time.monotonic() > slice_ends:
                    await asyncio.sleep(0)
                    slice_ends = time.monotonic() + SUBMIT_SLICE_SECONDS
        finally:
            self._submitters -= 1
            self.check_idle()

    def _take_next(self) -> tuple[JobHandle, Attempt] | None:
        item = self._to_submit[0]
        if not isinstance(item, _Batch):
            return self._to_submit.popleft()
        item.left -= 1
        if item.left <= 0:
            self._to_submit.popleft()
        if item.reactive:
            if self._reactive_jobs >= self.config.limits.max_jobs:
                self.end(
                    f"the rules submitted {self._reactive_jobs} jobs in reaction to jobs and "
                    "metrics, the limit (raise limits.max_jobs if that is intended, otherwise a "
                    "rule is feeding itself)",
                    "limit",
                )
                return None
            self._reactive_jobs += 1
        handle = JobHandle(next(self._keys), item.spec, reactive=item.reactive)
        self._active[handle.key] = handle
        self._count_submitted(item.spec.group)
        if self.journal is not None:
            self.journal.handed(handle)
        return handle, handle.attempts[-1]

    def _intend(self, taken: list[tuple[JobHandle, Attempt]]) -> int:
        """Write down, before the member sees them, that these attempts are being submitted:
        the flush's ticket, to wait for (`durable`) before submitting."""
        assert self.journal is not None
        for handle, attempt in taken:
            attempt.token = self.journal.token(handle.key, len(handle.attempts))
            self.journal.submitting(handle)
        return self.flush_state(durable=False)

    async def _submit(self, handle: JobHandle, attempt: Attempt) -> None:
        if handle.cancel_requested:
            self._unsubmitted(handle, attempt, Outcome.CANCELLED, "cancelled before submission")
            return
        spec = attempt.spec
        if attempt.token is not None:
            spec = spec.model_copy(
                update={"attributes": {**spec.attributes, TOKEN_ATTRIBUTE: attempt.token}}
            )
        self._submitting += 1
        try:
            member_id = await self.member.submit(spec)
        except Exception as error:  # this job's submission failed: this job, and only it, ends
            self._submitting -= 1
            reason = f"submission to the {self.member.name} member failed: {one_line(error)}"
            log.warning("job %s: %s", handle.key, reason)
            self._unsubmitted(handle, attempt, Outcome.FAILED, reason)
            return
        self._submitting -= 1
        attempt.member_id = member_id
        attempt.phase = max(attempt.phase, 1)
        self._changed(handle)
        if handle.done():  # close() gave up on it meanwhile: leave nothing running
            await self._cancel_member_job(handle, member_id)
            return
        self.follow_member_job(member_id, (handle, attempt))
        if at := attempt.member_group:
            self._count_submitted(at)
        for event in self._orphans.take(member_id):
            self._on_event(event)
        if not self._submitting:
            self._orphans.clear()
        if (self._stopping or handle.cancel_requested) and member_id in self._by_member_id:
            await self._cancel_member_job(handle, member_id)

    def _unsubmitted(self, handle: JobHandle, attempt: Attempt, outcome: Outcome, why: str) -> None:
        """An attempt that never reached the member ends here, counted like any other end."""
        attempt.phase = 3
        group = attempt.spec.group
        self.metrics.count(group, "pending", -1)
        self.metrics.ended(group, outcome)
        self._finish_job(handle, outcome, why)

    # Events -----------------------------------------------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        """Every member event passes here (or through `DirectIntake`, which keeps the same
        boundary), on the loop thread: the containment boundary."""
        entry = None
        try:
            entry = self._by_member_id.get(event.jobid)
            if entry is None:
                if self._submitting or self._adopting:
                    self._orphans.add(event)
                return
            self._handle_event(entry, event)
        except Exception as error:
            self._event_failed(event, error, entry)

    def _handle_event(self, entry: tuple[JobHandle, Attempt], event: JobEvent) -> None:
        handle, attempt = entry
        if attempt.repeated(event):
            return
        attempt.record.observe(event)
        name = event.name
        group = attempt.spec.group
        # The events that change what is counted (start, clean, and those a rule reacts to)
        # mark the job for the journal: written with the metrics and rules' state they changed,
        # so a resumed controller knows it counted them. Other events change nothing written:
        # one replayed after a crash changes nothing when counted again.
        journal_dirty = self._journal_dirty
        if name == "submit":
            if attempt.phase < 2:
                self._waiting[attempt.member_id] = attempt
        elif name == "start":
            if journal_dirty is not None:
                journal_dirty[handle.key] = handle
            attempt.phase = 2
            self._waiting.pop(attempt.member_id, None)
            self._started(group, attempt)
            if self._direct is not None:  # the router's pending times
                self._direct.started(attempt.member_id)
        elif name == "clean":
            if journal_dirty is not None:
                journal_dirty[handle.key] = handle
            self._attempt_ended(handle, attempt)
        engine = self.engine
        if name in engine.job_event_names:
            if journal_dirty is not None:
                journal_dirty[handle.key] = handle
            self._perform_all(engine.job_event(name, group, handle))
        if self.metrics.changed or engine.armed:
            self._evaluate_metrics()
        if name == "clean":
            self.check_idle()

    def _event_failed(
        self, event: JobEvent, error: Exception, entry: tuple[JobHandle, Attempt] | None
    ) -> None:
        """A bug met while handling an event: log it. The job stays followed, so its end still
        ends it; a job whose end it was ends here, unless its end was handled before the bug
        (it has its outcome, or a rule resubmitted it)."""
        log.error("ensemble: error while handling event %s of job %s", event.name, event.jobid)
        log.debug("the error", exc_info=error)
        if entry is None or event.name != "clean":
            return
        handle, attempt = entry
        if not handle.done() and handle.attempts[-1] is attempt:
            self._abandon(handle, attempt, Outcome.FAILED, f"failed: {one_line(error)}")
            self.check_idle()

    def follow_member_job(self, member_id: Any, entry: tuple[JobHandle, Attempt]) -> None:
        """Events of `member_id` are the attempt's from now on (after its submission or its
        adoption)."""
        self._by_member_id[member_id] = entry
        if self._direct is not None:
            self._direct.follow(member_id, entry)
        if self._member_group is not None:
            entry[1].member_group = self._member_group(member_id)

    def forget_member_job(self, member_id: Any) -> None:
        """The attempt is over (or given up): its member's events mean nothing any more."""
        if self._by_member_id.pop(member_id, None) is not None and self._direct is not None:
            self._direct.forget(member_id)

    def _started(self, group: str, attempt: Attempt) -> None:
        """An attempt's start, in its group's counters and series, and its member's."""
        metrics = self.metrics
        record = attempt.record
        at = attempt.member_group
        metrics.shift(group, "pending", "running", at)
        if record.submit_time is not None and record.start_time is not None:
            waited = record.start_time - record.submit_time
            metrics.record(group, "pending", waited)
            if at is not None and self._member_series:
                metrics.record(at, "pending", waited)

    def _attempt_ended(self, handle: JobHandle, attempt: Attempt) -> None:
        member_id = attempt.member_id
        self._waiting.pop(member_id, None)
        record = attempt.record
        outcome = record.outcome
        group = attempt.spec.group
        self._count_end(group, attempt, outcome)
        attempt.phase = 3
        try:
            if not self._resubmitted(handle, outcome):
                self._finish_job(handle, outcome, record.reason, self._log_paths(member_id))
        finally:  # forgotten after its log paths: a router still knows the job when asked
            self.forget_member_job(member_id)
        self._perform_all(self.engine.job_outcome(outcome.value, group, handle))

    def _count_end(self, group: str, attempt: Attempt, outcome: Outcome) -> None:
        """An attempt's end, in the counters and series of its group, and its member's."""
        metrics = self.metrics
        at = attempt.member_group
        if attempt.phase == 2:
            metrics.shift(group, "running", "finished", at)
            record = attempt.record
            if record.start_time is not None and record.end_time is not None:
                took = record.end_time - record.start_time
                metrics.record(group, "duration", took)
                if at is not None and self._member_series:
                    metrics.record(at, "duration", took)
        else:
            metrics.count(group, "pending", -1)
            if at is not None:
                metrics.count(at, "pending", -1)
        metrics.ended(group, outcome, at)

    def _resubmitted(self, handle: JobHandle, outcome: Outcome) -> bool:
        """Let the first resubmit rule that can act on this job resubmit it; only that rule
        spends one of the job's repetitions."""
        if self._stopping or handle.cancel_requested:
            return False
        group = handle.spec.group
        for index in self.engine.resubmit_rules(outcome.value, group, handle.key):
            rule = self.engine.rules[index]
            try:
                spec = handle.spec.scaled(rule.action.changes)
                spec = spec.model_copy(update={"attempt": handle.spec.attempt + 1})
                if rule.action.member:
                    spec = sent_to(spec, rule.action.member)
            except Exception as error:
                firing = Firing(index, rule, group, handle)
                self._actions.record(firing, f"not resubmitted: {one_line(error)}", job=handle.key)
                continue
            firing = self.engine.spend_resubmit(index, group, handle.key)
            attempt = Attempt(spec)
            handle.attempts.append(attempt)
            changes = ", ".join(f"{k} {getattr(spec, k)}" for k in rule.action.changes)
            detail = f"attempt {spec.attempt}: {changes or 'unchanged'}"
            if rule.action.member:
                detail += f", to the {rule.action.member} member"
            self._actions.record(firing, detail, job=handle.key)
            self.metrics.count(group, "resubmitted")
            self._enqueue(handle, attempt)
            return True
        return False

    def _finish_job(
        self, handle: JobHandle, outcome: Outcome, reason: str, log_paths: list[str] | None = None
    ) -> None:
        """The logical job's outcome is final: resolve its handle and forget it."""
        self._active.pop(handle.key, None)
        self._by_identity.pop(handle.identity or "", None)
        self._cancel_errors.pop(handle.key, None)
        self.engine.forget(handle.key)
        handle.resolve(outcome, reason, log_paths or [])
        self._changed(handle)

    def _abandon(self, handle: JobHandle, attempt: Attempt, outcome: Outcome, why: str) -> None:
        """End a job whose member will not tell its end (lost, or silent past the bound)."""
        self.forget_member_job(attempt.member_id)
        self._waiting.pop(attempt.member_id, None)
        if attempt.phase < 3:
            if self._member_group is not None and attempt.member_group is None:
                # not followed (a resumed job its member no longer knows): counted under its
                # member all the same, as when it was submitted
                attempt.member_group = self._member_group(attempt.member_id)
            self._count_end(attempt.spec.group, attempt, outcome)
            attempt.phase = 3
        self._finish_job(handle, outcome, why)

    def _log_paths(self, member_id: Any) -> list[str]:
        try:
            return self.member.log_paths(member_id)
        except Exception as error:
            log.warning("ensemble: the job's log paths are unknown: %s", one_line(error))
            return []

    # The state journal ------------------------------------------------------------------------

    def _changed(self, handle: JobHandle) -> None:
        if self.journal is not None:
            self.journal.changed(handle)

    def flush_state(self, *, durable: bool = True) -> int:
        """Write what changed to the state journal, with the counters, the rules' state and the
        metrics, in one transaction: `durable` (on disk when this returns), or in the background,
        returning a ticket to wait for with `durable` before anything that changes the queue."""
        journal = self.journal
        if journal is None:
            return 0
        journal.set_meta(
            next_key=next(self._keys),
            reactive_jobs=self._reactive_jobs,
            engine=self.engine.state(),
            metrics=self.metrics.groups,
            saved_at=time.time(),
            routes=self.member.routes if isinstance(self.member, RouterMember) else {},
        )
        journal.set_batches(
            (item.spec, item.left, item.reactive)
            for item in self._to_submit
            if isinstance(item, _Batch)
        )
        return journal.flush(wait=durable)

    async def durable(self, ticket: int) -> None:
        """Wait until the flush `ticket` of the state journal is written, events going on
        meanwhile."""
        if ticket and self.journal is not None:
            await self.journal.durable(ticket)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self.journal is not None and self.journal.due():
                self.flush_state(durable=False)

    # Rules and actions ------------------------------------------------------------------------

    def _evaluate_metrics(self) -> None:
        changed = self.metrics.changed
        groups = tuple(changed)
        changed.clear()
        self._perform_all(self.engine.metrics_changed(groups, self.metrics.value))

    def _perform_all(self, firings: list[Firing]) -> None:
        for firing in firings:
            self._actions.perform(firing)
        if self.engine.exhausted:
            self.end(self.engine.exhausted, "limit")

    def cancel_where(self, label: str | None, job: Any) -> int:
        """Cancel the active jobs of group `label`, or the job `job` (a cancel action)."""
        if label:
            targets = [h for h in self._active.values() if h.spec.group == label]
        else:
            targets = [job] if isinstance(job, JobHandle) and job.key in self._active else []
        self._cancel_many(targets)
        return len(targets)

    def _cancel_many(self, handles: list[JobHandle], pause_every: int = 256) -> None:
        """Cancel now the jobs the member has; the others as soon as their submission returns
        (or instead of it, for those still queued). Events are let in every `pause_every`
        cancels (0: never, for a stop that must not let the member start another job)."""
        known = []
        for handle in handles:
            handle.cancel_requested = True
            self._changed(handle)
            member_id = handle.member_id
            if member_id is not None and member_id in self._by_member_id:
                known.append((handle, member_id))
        if known:
            self.spawn(self._cancel_member_jobs(known, pause_every))

    async def _cancel_member_jobs(
        self, jobs: list[tuple[JobHandle, Any]], pause_every: int
    ) -> None:
        await self.durable(self.flush_state(durable=False))
        for count, (handle, member_id) in enumerate(jobs, 1):
            if member_id in self._by_member_id:
                await self._cancel_member_job(handle, member_id)
            if pause_every and count % pause_every == 0:
                await asyncio.sleep(0)

    async def _cancel_member_job(self, handle: JobHandle, member_id: Any) -> None:
        try:
            await self.member.cancel(member_id)
        except Exception as error:  # the job may still run: say so if it never ends
            reason = one_line(error)
            self._cancel_errors[handle.key] = reason
            log.warning(
                "ensemble: cancel of %s job %s failed: %s", self.member.name, member_id, reason
            )

    # Time-driven rules ------------------------------------------------------------------------

    async def _heartbeat(self, seconds: float) -> None:
        """ensemble-python's heartbeat: record the pending time of waiting jobs, re-check rules."""
        while not self._stopping:
            await asyncio.sleep(seconds)
            try:
                now = time.time()
                for member_id, attempt in self._waiting.items():
                    waited = now - (attempt.record.submit_time or now)
                    self.metrics.record(attempt.spec.group, "pending", waited)
                    if self._member_series and (at := self._member_group(member_id)):
                        self.metrics.record(at, "pending", waited)
                self.metrics.changed.clear()
                self._perform_all(self.engine.all_metrics(self.metrics.value))
            except Exception:
                log.exception("ensemble: heartbeat failed")

    async def _tick_gauges(self) -> None:
        """Rules on queue.oldest-pending see it grow while jobs wait, within a tick."""
        while not self._stopping:
            await asyncio.sleep(GAUGE_TICK_SECONDS)
            if self._waiting:
                self._perform_all(self.engine.time_gauges(self.metrics.value))

    async def _intervals(self) -> None:
        while not self._stopping:
            delay = self.engine.next_interval()
            if delay is None:
                return
            await asyncio.sleep(delay)
            self._perform_all(self.engine.due_intervals())
            self.check_idle()

    def _oldest_pending(self) -> float:
        """Seconds the longest-waiting job has waited (the `queue.oldest-pending` gauge)."""
        oldest = next(iter(self._waiting.values()), None)
        if oldest is None or oldest.record.submit_time is None:
            return 0.0
        return time.time() - oldest.record.submit_time

    # Ending -----------------------------------------------------------------------------------

    def check_idle(self) -> None:
        """The ensemble has run to its end when no job is active or queued, no action runs,
        and no rule can fire again."""
        if self._finished.is_set():
            return
        if self._active or self._submitting or self._to_submit or self._actions.running:
            return
        if self._stopping or self.engine.next_interval() is None:
            self._finished.set()

    def end(self, reason: str, exit: str) -> None:
        """Stop: nothing more is submitted, what runs is cancelled (on the loop thread)."""
        if self._stopping:
            return
        self._stopping = True
        self.exit, self.stop_reason = exit, reason
        why = f"cancelled: {self._ended_why()}"
        while self._to_submit:
            item = self._to_submit.popleft()
            if not isinstance(item, _Batch):
                self._unsubmitted(item[0], item[1], Outcome.CANCELLED, why)
        # Jobs not started first, newest first: a running job cancelled first would free its
        # cores for the next queued one, which would start after the stop.
        handles = sorted(reversed(self._active.values()), key=lambda h: h.attempts[-1].phase == 2)
        self._cancel_many(handles, pause_every=0)
        self.check_idle()

    def _ended_why(self) -> str:
        return (
            f"the ensemble ended ({self.stop_reason})" if self.stop_reason else "the ensemble ended"
        )

    def _member_lost(self, reason: str) -> None:
        """The member's stream is gone for good: end the ensemble, resolve every job now."""
        if not on_controller_thread():
            self._threadsafe(self._member_lost, reason)
            return
        log.error("ensemble: the %s member was lost: %s", self.member.name, reason)
        self.end(f"the {self.member.name} member was lost: {reason}", "error")
        why = (
            f"failed: the {self.member.name} member was lost ({reason}); "
            "what became of the job on the queue is unknown"
        )
        for handle in list(self._active.values()):
            self._abandon(handle, handle.attempts[-1], Outcome.FAILED, why)
        self.check_idle()

    async def _detach(self) -> None:
        """Stop following the jobs and leave them running: the journal keeps them open."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        self.flush_state()
        journal, self.journal, self._journal_dirty = self.journal, None, None
        assert journal is not None
        journal.close()
        why = "detached: the job goes on on the queue; `ensemble attach` follows it again"
        for handle in list(self._active.values()):
            handle.resolve(Outcome.CANCELLED, why, [])
        self._active.clear()
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.member.close()
        except Exception as error:
            log.warning("ensemble: closing the %s member: %s", self.member.name, one_line(error))
        self._finished.set()

    async def _close(self) -> None:
        self.end(self.stop_reason, self.exit)
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self._active or self._submitting or self._actions.running:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        for handle in list(self._active.values()):
            attempt = handle.attempts[-1]
            self._abandon(handle, attempt, Outcome.CANCELLED, self._left_at_close(handle, attempt))
        for task in list(self._tasks):
            task.cancel()
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self.member.close()
        except Exception as error:
            log.warning("ensemble: closing the %s member: %s", self.member.name, one_line(error))
        if self.journal is not None:
            self.journal.set_meta(ended=self.exit, stop_reason=self.stop_reason)
            self.flush_state()
            self.journal.close()
            self.journal, self._journal_dirty = None, None
        self._finished.set()

    def _left_at_close(self, handle: JobHandle, attempt: Attempt) -> str:
        """Why a job still active `CLOSE_WAIT_SECONDS` after the stop ends cancelled: its
        member did not confirm its end, or it never reached its member (a submission that did
        not return, or one waiting for its intent to be written by a stalled journal)."""
        member = self.member.name
        if attempt.member_id is None:
            why = f"cancelled: the run ended before the {member} member took the job"
            if self.journal is not None and self.journal.handoff.behind:
                why += (
                    "; the state journal's writer had not written its intent to submit it "
                    f"{CLOSE_WAIT_SECONDS:g} s after the stop (is the disk of the state "
                    "directory stalled?)"
                )
            return why
        said = self._cancel_errors.get(handle.key)
        return (
            f"cancelled: the {member} member did not confirm the end of job "
            f"{attempt.member_id} within {CLOSE_WAIT_SECONDS:g} s"
            + (f" (its cancel failed: {said})" if said else "")
        )

    def _resolve_leftovers(self, why: str) -> None:
        """After the loop stopped: jobs it never took in, or never ended, end here."""
        with self._intake_lock:
            handles, self._intake = self._intake, []
        for handle in [*handles, *list(self._active.values())]:
            handle.resolve(Outcome.CANCELLED, why, [])
        self._active.clear()


def _member_metrics_read(rules: list[Rule]) -> tuple[bool, bool]:
    """Whether a metric rule reads a member's metrics (`count.@cloud.running`), and whether
    one reads a member's statistic (`mean.@cloud-pending`)."""
    names = [rule.name or "" for rule in rules if rule.trigger == "metric"]
    on_members = [name for name in names if metric_group(name).startswith("@")]
    return bool(on_members), any(not name.startswith("count.") for name in on_members)
