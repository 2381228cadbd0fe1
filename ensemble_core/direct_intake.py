"""The members behind a router hand their events to the controller directly.

The controller follows each job by its router id (`hpc/1234`, members/router.py). For each
member behind the router it also keeps the jobs by the member's own id, so that an event the
member sends reaches its job with one lookup, as with a single member, instead of through the
router's relay, which finds the router id and lends it to the event. The router still notes what
it follows itself (a job's start and end), and the events of jobs the controller does not follow
yet (their submission has not returned, or they are being adopted) take the relay's way.
"""

from __future__ import annotations

from collections.abc import Callable
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
        handle: Callable[[Entry, JobEvent], None],
        failed: Callable[[JobEvent, Exception, Entry], None],
    ) -> None:
        self._split = split
        self._handle = handle
        self._failed = failed
        self._tables: dict[str, dict[Any, Entry]] = {}
        #: Where each followed job is: router id -> (its member's table, the member's id).
        self._places: dict[Any, tuple[dict[Any, Entry], Any]] = {}

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
            if event.name in followed:
                note(event)
            try:  # the controller's containment boundary, as in its own intake
                handle(entry, event)
            except Exception as error:
                failed(event, error, entry)

        return take

    def follow(self, member_id: Any, entry: Entry) -> None:
        where = self._split(member_id)
        if where is not None:
            table = self._tables.setdefault(where[0], {})
            table[where[1]] = entry
            self._places[member_id] = (table, where[1])

    def forget(self, member_id: Any) -> None:
        place = self._places.pop(member_id, None)
        if place is not None:
            place[0].pop(place[1], None)
