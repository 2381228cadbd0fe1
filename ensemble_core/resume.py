"""Resuming a run from its state journal: the controller takes up where the last one stopped.

The counters, the rules' state and the metrics come back as they were written; the jobs that
were open come back as handles, and the member adopts those it was given (see
`Member.adopt`), replaying their events so far. Of those it does not know:

- an attempt never handed to the member (no token written) is submitted now;
- an attempt whose member id was never learned was never seen by the queue either (the member
  looked for its token): it is submitted now, under the same token;
- an attempt of a member whose jobs end with the controller (the local member) was ended with
  the previous controller: it is submitted again as if it had never started;
- any other attempt ended while no controller followed it and the queue has forgotten it: the
  job ends as failed, saying so.

No `start` rule fires again: a resumed run is the same run.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.members.router import RouterMember

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble
    from ensemble_core.state import SavedRun

log = logging.getLogger(__name__)


async def resume(ensemble: Ensemble, saved: SavedRun) -> None:
    """Restore `ensemble` from `saved` (its member started) and adopt the open jobs."""
    from ensemble_core.ensemble import _Batch

    meta = saved.meta
    ensemble._keys = itertools.count(meta["next_key"])
    ensemble._reactive_jobs = meta["reactive_jobs"]
    ensemble.engine.restore(meta["engine"], elapsed=max(0.0, time.time() - meta["saved_at"]))
    ensemble.metrics.groups.update(meta["metrics"])
    if isinstance(ensemble.member, RouterMember):  # where route actions sent the groups' jobs
        ensemble.member.routes.update(meta.get("routes", {}))
    ensemble.started_at = meta.get("started_at", ensemble.started_at)
    for spec, left, reactive in saved.batches:
        ensemble._to_submit.append(_Batch(spec, left, reactive))
    to_adopt: list[tuple[JobHandle, Attempt]] = []
    for job in saved.jobs:
        handle = JobHandle(job.key, job.attempts[0].spec, reactive=job.reactive)
        handle.identity, handle.attempts = job.identity, job.attempts
        handle.cancel_requested = job.cancel_requested
        ensemble._active[handle.key] = handle
        # Written again at the first flush: a job the run before knew only as handed to the
        # member (no row yet) would otherwise be known to no later run, though counted.
        ensemble._changed(handle)
        if handle.identity is not None:
            ensemble._by_identity[handle.identity] = handle
        attempt = handle.attempts[-1]
        if attempt.phase == 3:  # its end was counted; the job's outcome was all that was left
            ensemble._finish_job(handle, attempt.record.outcome, attempt.record.reason)
        elif attempt.token is None:
            ensemble._to_submit.append((handle, attempt))  # counted as submitted already
        else:
            to_adopt.append((handle, attempt))
    ensemble._adopting += 1  # a member may replay while another is still asked (a router)
    try:
        found = await _adopt(ensemble, to_adopt)
    finally:
        ensemble._adopting -= 1
    waiting = []
    member = ensemble.member
    for handle, attempt in to_adopt:
        member_id = found.get(attempt.token or "")
        if member_id is not None:
            attempt.member_id = member_id
            attempt.phase = max(attempt.phase, 1)
            ensemble.follow_member_job(member_id, (handle, attempt))
            if attempt.phase == 1 and attempt.record.submit_time is not None:
                waiting.append((attempt.record.submit_time, member_id, attempt))
        elif attempt.member_id is None:
            ensemble._to_submit.append((handle, attempt))
        elif member.ends_with_controller(attempt.member_id):
            _start_again(ensemble, handle, attempt)
        else:
            why = (
                f"failed: the {member.name} member no longer knows job {attempt.member_id}: it "
                "ended while no controller followed it, and the queue has forgotten it"
            )
            ensemble._abandon(handle, attempt, Outcome.FAILED, why)
    for _, member_id, attempt in sorted(waiting, key=lambda item: item[0]):
        ensemble._waiting[member_id] = attempt
    for member_id in found.values():
        for event in ensemble._orphans.take(member_id):
            ensemble._on_event(event)
    log.info(
        "ensemble: resumed run %s: %d open job(s), %d adopted",
        ensemble.journal.run_id if ensemble.journal else "?",
        len(saved.jobs),
        len(found),
    )
    ensemble._wake_submitters()


async def _adopt(ensemble: Ensemble, jobs: list[tuple[JobHandle, Attempt]]) -> dict[str, object]:
    if not jobs:
        return {}
    try:
        return await ensemble.member.adopt([(a.member_id, a.token or "") for _, a in jobs])
    except Exception as error:
        raise MemberError(
            f"cannot resume: the {ensemble.member.name} member could not look for the jobs of "
            f"the run before ({error}); use --fresh to start anew (those jobs may still run)"
        ) from error


def _start_again(ensemble: Ensemble, handle: JobHandle, attempt: Attempt) -> None:
    """An attempt that ended with the previous controller runs again, as if never started."""
    metrics = ensemble.metrics
    groups = [attempt.spec.group]
    if ensemble._member_group is not None and (at := ensemble._member_group(attempt.member_id)):
        groups.append(at)  # with several members, its member's counters too
    for group in groups:
        metrics.count(group, "running" if attempt.phase == 2 else "pending", -1)
        metrics.count(group, "submitted", -1)
    attempt.member_id, attempt.phase, attempt.seen = None, 0, 0
    attempt.token, attempt.record, attempt.repeats = None, AttemptRecord(), ()
    ensemble._enqueue(handle, attempt)
