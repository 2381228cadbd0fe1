"""The members behind a router hand their events to the controller directly.

The controller follows each job by its router id (`hpc/1234`, members/router.py). For each
member behind the router it also keeps the jobs by the member's own id, so that an event the
member sends reaches its job with one lookup, as with a single member, instead of through the
router's relay, which finds the router id and lends it to the event. The router still notes what
it follows itself (a job's start and end), after the controller's turn, and the events of jobs
the controller does not follow yet (their submission has not returned, or they are being
adopted) take the relay's way. Which member and which of its ids a router id stands for is read
from the router's own table of open jobs (`RouterMember.open_jobs`), not from the id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.members.base import EmitEvent

Entry = tuple[JobHandle, Attempt]


class DirectIntake:
    """The controller's jobs by each member's own id, and each member's way in."""

    def __init__(
        self,
        split: Callable[[Any], tuple[str, Any] | None],
        open_jobs: Mapping[Any, tuple[str, Any]],
        handle: Callable[[Entry, JobEvent], None],
        failed: Callable[[JobEvent, Exception, Entry], None],
    ) -> None:
        self._split = split
        #: The router's own table of its open jobs, read where it has the job (a dict's
        #: lookup, no call into the router): `split` for the others.
        self._open_jobs = open_jobs
        self._handle = handle
        self._failed = failed
        self._tables: dict[str, dict[Any, Entry]] = {}

    def intake(
        self, name: str, relay: EmitEvent, note: EmitEvent, followed: frozenset[str]
    ) -> EmitEvent:
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
            # Noted after the controller's turn: the router still knows the job while the
            # controller ends it (its id found, not read, when it is forgotten here and its
            # log paths asked for).
            if event.name in followed:
                note(event)

        return take

    def follow(self, member_id: Any, entry: Entry) -> None:
        where = self._open_jobs.get(member_id) or self._split(member_id)
        if where is not None:
            self._tables.setdefault(where[0], {})[where[1]] = entry

    def forget(self, member_id: Any) -> None:
        where = self._open_jobs.get(member_id) or self._split(member_id)
        if where is not None:
            table = self._tables.get(where[0])
            if table is not None:
                table.pop(where[1], None)
