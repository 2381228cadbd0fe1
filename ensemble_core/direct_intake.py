"""The members behind a router hand their events to the controller directly.

The controller follows each job by its router id (`hpc/1234`, members/router.py). For each
member behind the router it also keeps the jobs by the member's own id, so that an event the
member sends reaches its job with one lookup, as with a single member, instead of through the
router's relay, which finds the router id and lends it to the event. The events of jobs the
controller does not follow yet (their submission has not returned, or they are being adopted)
take the relay's way.

What the router keeps of a job (its pending time, that it is open) is told by the controller
from its own start and end (`started`, `forget`), not noted by looking at each event's name.
Which member and which of its ids a router id stands for is read from the router's own table
of open jobs (`RouterMember.open_jobs`), not from the id: the controller asks for a job's log
paths before it forgets the job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.members.base import EmitEvent
from ensemble_core.members.router import RouterMember

Entry = tuple[JobHandle, Attempt]


class DirectIntake:
    """The controller's jobs by each member's own id, each member's way in, and what the
    controller tells the router of its jobs."""

    def __init__(
        self,
        router: RouterMember,
        handle: Callable[[Entry, JobEvent], None],
        failed: Callable[[JobEvent, Exception, Entry], None],
    ) -> None:
        self._split = router.split_id
        self._open_jobs = router.open_jobs
        self._ended = router.ended
        #: A followed job started (its router id): the router's pending times.
        self.started: Callable[[Any], None] = router.started
        self._handle = handle
        self._failed = failed
        self._tables: dict[str, dict[Any, Entry]] = {}

    def intake(self, name: str, relay: EmitEvent) -> EmitEvent:
        """What member `name` emits to (the router's `Intake`)."""
        table = self._tables.setdefault(name, {})
        handle, failed = self._handle, self._failed

        def take(event: JobEvent) -> None:
            entry = table.get(event.jobid)
            if entry is None:
                relay(event)
                return
            try:  # the controller's containment boundary, as in its own intake
                handle(entry, event)
            except Exception as error:
                failed(event, error, entry)

        return take

    def follow(self, member_id: Any, entry: Entry) -> None:
        where = self._open_jobs.get(member_id) or self._split(member_id)
        if where is not None:
            self._tables.setdefault(where[0], {})[where[1]] = entry

    def forget(self, member_id: Any) -> None:
        """The controller is done with the job: neither it nor the router follows it."""
        where = self._ended(member_id) or self._split(member_id)
        if where is not None:
            table = self._tables.get(where[0])
            if table is not None:
                table.pop(where[1], None)
