"""Pods and Jobs as the watches see them, turned into each job's RFC 21 events, each at most once.

A Kubernetes job is a `batch/v1` Job with one Pod (backoffLimit 0). The Pod tells the job's life:
Pending (depend, priority), scheduled (alloc), its container running (start) and terminated
(finish, an `oom` exception for OOMKilled, a `timeout` one for the Pod's DeadlineExceeded).

With `restartPolicy: Never` and `backoffLimit: 0` a Pod in phase Succeeded or Failed is the job's
end: nothing will run again. So the job ends on that state, seconds before the Job controller
(rate-limited, 20 requests/s by default) gets to set the Job's Complete or Failed condition, which
then only confirms it. A Pod that is being deleted (deletionTimestamp) is the exception: someone
ended it (a Job-level DeadlineExceeded, the Job deleted), so the Job tells why: its Failed
condition, or its own deletion. The two watches are separate streams, so the Job may report the end
before the Pod's last state arrives: the member then reads the Pod before the job is cleaned.

Everything here runs on the controller's loop thread; it does no I/O.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.members.base import EmitEvent
from ensemble_core.translate.kubernetes import CONTAINER

#: Exception types for the reasons a Pod fails as a whole (its containers aside).
POD_FAILURES = {"DeadlineExceeded": "timeout", "Evicted": "evicted"}
_DONE_PHASES = ("Succeeded", "Failed")


def wait_status(terminated: dict[str, Any]) -> int:
    """A terminated container's end as a wait status, like Flux's `finish` status."""
    signal = terminated.get("signal") or 0
    if signal:
        return signal & 0x7F
    return (terminated.get("exitCode") or 0) << 8 & 0xFF00


def job_name_of(pod: dict[str, Any]) -> str | None:
    """The name of the Job that owns a Pod."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    if name:
        return name
    for owner in metadata.get("ownerReferences") or ():
        if owner.get("kind") == "Job":
            return owner.get("name")
    return None


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return status.get("state") or {}
    return (statuses[0].get("state") or {}) if statuses else {}


def object_name(obj: Any) -> str | None:
    """An object's name, or None for what is not an object with one."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata.get("name") if isinstance(metadata, dict) else None


def _scheduled(pod: dict[str, Any]) -> bool:
    if (pod.get("spec") or {}).get("nodeName"):
        return True
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == "PodScheduled" and c.get("status") == "True" for c in conditions)


def _memory_limit(pod: dict[str, Any]) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or ():
        if container.get("name") == CONTAINER:
            return ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None


@dataclass
class _Job:
    emitted: set[str] = field(default_factory=set)
    submitted: bool = False
    held: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    pod: str | None = None
    #: The Pod was seen in a terminal phase, or deleted: its last state is known.
    pod_final: bool = False
    #: The Pod's terminal state ends the job (it was not ended by a deletion).
    pod_ended: bool = False
    job_final: bool = False
    ending: bool = False
    cancelling: bool = False
    failed: bool = False
    #: A list of Jobs ran, and lacked it, while its create call was in flight (it may have been
    #: created before that list, then deleted): read it once the call returns.
    listed_before_created: bool = False
    #: A read of the Job (to tell whether a list that lacked it means it is gone) is in flight.
    confirming: bool = False
    #: Why the job ended because an observation of it could not be handled.
    unreadable: str | None = None


class JobTracker:
    """The state of each job this member submitted, fed by observations of Pods and Jobs.

    `on_ended(name)` is called once when a job is over; the member then (maybe) reads its Pod and
    its log, and calls `clean(name)`. Observations of a job whose create call has not returned are
    held and replayed after `submitted`, so that `submit` is always its first event.
    """

    def __init__(
        self,
        emit: EmitEvent,
        on_ended: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._emit = emit
        self._on_ended = on_ended
        self._clock = clock
        self._jobs: dict[str, _Job] = {}

    # -- submission and cancellation, by the member ------------------------------------------

    def expect(self, name: str) -> None:
        """A Job of this name is about to be created."""
        self._jobs[name] = _Job()

    def forget(self, name: str) -> None:
        """Its create call failed: there is no such job."""
        self._jobs.pop(name, None)

    def submitted(self, name: str, created: str | None = None) -> bool:
        """The create call returned (or the Job, `created` then, was adopted): `submit`,
        `validate`, then what the watches saw meanwhile. True if the member should read the
        Job to learn whether it still exists."""
        job = self._jobs.get(name)
        if job is None or job.submitted:
            return False
        job.submitted = True
        self._once(name, job, "submit", at=created)
        self._once(name, job, "validate", at=created)
        if job.unreadable:
            self._end_unreadable(name, job)
            return False
        held, job.held = job.held, []
        for kind, obj, deleted in held:
            self.observe(kind, obj, deleted)
        if job.listed_before_created and not job.ending and not job.confirming:
            job.confirming = True
            return True
        return False

    def begin_cancel(self, name: str) -> bool:
        """Whether a cancel should go ahead (the job is known and not over); if so, what the
        watches see of the job from now on is its deletion, and is ignored."""
        job = self._jobs.get(name)
        if job is None or job.ending:
            return False
        job.ending = job.cancelling = True
        return True

    def abort_cancel(self, name: str) -> None:
        """The delete call failed: the job goes on, and may have ended meanwhile."""
        job = self._jobs.get(name)
        if job is not None:
            job.ending = job.cancelling = False
            self._check(name, job)

    def end_cancel(self, name: str) -> None:
        """The Job is deleted: the `cancel` exception, then the job is clean."""
        job = self._jobs.get(name)
        if job is not None:
            self._exception(name, job, "cancel", "cancelled by the ensemble")
            self.clean(name)

    # -- what the watches see ------------------------------------------------------------------

    def observe(self, kind: str, obj: dict[str, Any], deleted: bool = False) -> None:
        """One Pod or Job ("pods" or "jobs"), as added, modified or deleted."""
        name = job_name_of(obj) if kind == "pods" else (obj.get("metadata") or {}).get("name")
        job = self._jobs.get(name) if name else None
        if job is None or job.cancelling:
            return
        if not job.submitted:
            job.held.append((kind, obj, deleted))
            return
        if kind == "pods":
            self._pod(name, job, obj, deleted)
        else:
            self._job(name, job, obj, deleted)
        self._check(name, job)

    def listed(self, kind: str, objects: list[Any]) -> list[str]:
        """A full list after a (re)list, its objects observed one by one already: the submitted
        Jobs it lacks (deleted, or only late?), which the member reads to tell."""
        if kind != "jobs":
            return []
        listed = {object_name(obj) for obj in objects}
        missing = []
        for name, job in self._jobs.items():
            if name in listed:
                job.listed_before_created = False
                continue
            if job.ending or job.confirming:
                continue
            if job.submitted:
                job.confirming = True
                missing.append(name)
            else:
                job.listed_before_created = True
        return missing

    def confirmed(self, name: str) -> None:
        """The read of a Job a list lacked has been answered (and observed, if it was found)."""
        job = self._jobs.get(name)
        if job is not None:
            job.confirming = False

    def gone(self, name: str) -> None:
        """A Job the list lacked is confirmed deleted: as if its DELETED event had been seen."""
        job = self._jobs.get(name)
        if job is not None and job.submitted:
            self._job(name, job, {}, deleted=True)
            self._check(name, job)

    def fail_unreadable(self, kind: str, obj: Any, note: str) -> None:
        """An observation of this object could not be handled: end the job it belongs to, if it
        can be told, as a failure that says why (its other sightings are then ignored)."""
        try:
            name = job_name_of(obj) if kind == "pods" else object_name(obj)
        except (AttributeError, TypeError):
            return
        job = self._jobs.get(name)
        if job is None or job.ending:
            return
        job.ending = True
        job.unreadable = f"the kubernetes member cannot read the {kind[:-1]} ({note})"
        if job.submitted:
            self._end_unreadable(name, job)

    def _end_unreadable(self, name: str, job: _Job) -> None:
        job.held = []
        self._exception(name, job, "member", job.unreadable or "")
        self.clean(name)

    # -- the end, by the member ----------------------------------------------------------------

    def pod_known(self, name: str) -> bool:
        """Whether the job's Pod was seen to its end (else the member reads it before cleaning)."""
        job = self._jobs.get(name)
        return job is None or job.pod_final

    def failed_pod(self, name: str) -> str | None:
        """The Pod whose log to keep: that of a job which failed (not one cancelled)."""
        job = self._jobs.get(name)
        if job is None or job.pod is None:
            return None
        return job.pod if job.failed or "finish" not in job.emitted else None

    def clean(self, name: str) -> None:
        """The job's last events; after them it is forgotten and later sightings are ignored."""
        job = self._jobs.pop(name, None)
        if job is None:
            return
        if "alloc" in job.emitted:
            self._once(name, job, "release")
            self._once(name, job, "free")
        self._once(name, job, "clean")

    # -- the mapping ---------------------------------------------------------------------------

    def _pod(self, name: str, job: _Job, pod: dict[str, Any], deleted: bool) -> None:
        job.pod = (pod.get("metadata") or {}).get("name") or job.pod
        status = pod.get("status") or {}
        self._once(name, job, "depend")
        self._once(name, job, "priority")
        state = _container_state(pod)
        terminated = state.get("terminated")
        if _scheduled(pod) or "running" in state or terminated:
            self._once(name, job, "alloc")
        began = (state.get("running") or terminated or {}).get("startedAt")
        if "running" in state or began:
            self._once(name, job, "start", at=began)
        reason = status.get("reason")
        if status.get("phase") == "Failed" and reason:
            note = f"{reason}: {status.get('message') or 'the Pod failed'}"
            self._exception(name, job, POD_FAILURES.get(reason, "pod-failure"), note)
        if terminated:
            if terminated.get("reason") == "OOMKilled":
                limit = _memory_limit(pod)
                note = f"OOMKilled (memory limit {limit})" if limit else "OOMKilled"
                self._exception(name, job, "oom", note)
            status_code = wait_status(terminated)
            job.failed = job.failed or status_code != 0
            self._once(name, job, "finish", {"status": status_code}, terminated.get("finishedAt"))
        if deleted or status.get("phase") in _DONE_PHASES:
            job.pod_final = True
            being_deleted = deleted or (pod.get("metadata") or {}).get("deletionTimestamp")
            job.pod_ended = job.pod_ended or not being_deleted

    def _job(self, name: str, job: _Job, obj: dict[str, Any], deleted: bool) -> None:
        conditions = (obj.get("status") or {}).get("conditions") or ()
        true = {c.get("type"): c for c in conditions if c.get("status") == "True"}
        failed = true.get("Failed")
        if failed and failed.get("reason") == "DeadlineExceeded":
            note = f"DeadlineExceeded: {failed.get('message') or 'the Job ran out of time'}"
            self._exception(name, job, "timeout", note)
        if "Complete" in true or failed:
            job.job_final = True
        elif deleted:
            job.job_final = True
            if not job.pod_final:
                self._exception(name, job, "cancel", "the Job was deleted outside the ensemble")

    def _check(self, name: str, job: _Job) -> None:
        if (job.job_final or job.pod_ended) and not job.ending:
            job.ending = True
            self._on_ended(name)

    def _exception(self, name: str, job: _Job, kind: str, note: str) -> None:
        if "exception" not in job.emitted:
            job.failed = True
        self._once(name, job, "exception", {"type": kind, "severity": 0, "note": note})

    def _once(
        self,
        name: str,
        job: _Job,
        event: str,
        context: dict[str, Any] | None = None,
        at: str | None = None,
    ) -> None:
        """Emit `event` unless it was; stamped when it is seen, but no later than the second
        after `at` (the Pod's own RFC 3339 time, whole seconds), so that an end seen late (a
        restarted controller's member replaying it) keeps its time within a second."""
        if event in job.emitted:
            return
        job.emitted.add(event)
        timestamp = self._clock()
        if at:
            with contextlib.suppress(ValueError):
                timestamp = min(timestamp, datetime.fromisoformat(at).timestamp() + 1.0)
        self._emit(JobEvent(name, event, timestamp, context or {}))
