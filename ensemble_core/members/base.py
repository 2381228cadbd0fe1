"""The protocol every member implements. Members push events; they never see a rule."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.spec import JobSpec

EmitEvent = Callable[[JobEvent], None]
LostHandler = Callable[[str], None]

#: The JobSpec attribute that names a submission uniquely across controllers (`<run>.<key>.<n>`):
#: a member keeps it with the job where the queue can (Flux: a user attribute; Kubernetes: a
#: label), so a restarted controller finds a job whose id it never learned.
TOKEN_ATTRIBUTE = "ensemble_token"

log = logging.getLogger(__name__)


def _log_lost(reason: str) -> None:
    log.error("member lost: %s", reason)


class Member(abc.ABC):
    """A queue that runs JobSpecs and reports their life as RFC 21 events.

    All coroutines run on the controller's event loop. `emit` must be called on that loop's thread
    (members with their own threads use `loop.call_soon_threadsafe`). Events may arrive before
    `submit` returns the job's id: the controller holds them until it knows the job.
    """

    name: str = "member"

    #: Whether this member's jobs end when the controller's process does (the local member's
    #: do). A restarted controller submits such jobs again instead of waiting for them.
    jobs_end_with_controller: bool = False

    #: Set by the controller before `start`. A member calls it (on the loop's thread) when its
    #: event stream is gone for good: it could not be resumed within the member's own bound.
    #: The controller then ends the ensemble and resolves every job; a member never calls it for
    #: a failure that concerns one job only (that job gets an `exception` event instead).
    on_lost: LostHandler = staticmethod(_log_lost)

    @abc.abstractmethod
    async def start(self, emit: EmitEvent) -> None:
        """Connect to the queue and begin pushing events through `emit`."""

    @abc.abstractmethod
    async def submit(self, spec: JobSpec) -> Any:
        """Submit one job; return the member's id for it (the `jobid` of its events)."""

    @abc.abstractmethod
    async def cancel(self, jobid: Any) -> None:
        """Cancel a job; the member then emits its `exception` (type cancel) and `clean`."""

    async def grow(self, value: int) -> str:
        """Add `value` units (nodes) of capacity; return what was done, for the summary."""
        return f"{self.name} member cannot grow"

    async def shrink(self, value: int) -> str:
        """Remove `value` units (nodes) of capacity; return what was done."""
        return f"{self.name} member cannot shrink"

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Follow jobs a previous controller submitted (it was killed, or detached).

        `jobs` holds (member id or None where it was never learned, token) per job. Returns
        {token: member id} for the jobs the queue still knows. After returning, the member emits
        every event each of them has had so far (from the queue's own record, in order) and then
        follows them like the jobs it submitted; the controller ignores events it had already
        counted. Jobs left out of the result are unknown to the queue: never submitted, or gone.
        """
        return {}

    def ends_with_controller(self, member_id: Any) -> bool:
        """Whether this job ended when the controller's process did (a restarted controller
        submits it again instead of waiting for it). One member's jobs are all alike; a member
        made of several answers per job."""
        return self.jobs_end_with_controller

    def describe(self) -> dict[str, Any]:
        """Settings and capacity as the summary shows them."""
        return {"member": self.name}

    def offers(self) -> dict[str, int | None]:
        """What this member can run, for choosing among several members: `cores`, `gpus` and
        `memory_mb` per node, `nodes` and `max_nodes`; None where it is not known (it then
        does not limit). Read from `describe()`'s `cores_per_node`, `gpus_per_node`,
        `memory_mb_per_node`, `nodes` and `max_nodes` unless a member says more."""
        from ensemble_core.matching import described_offer

        return described_offer(self.describe())

    def log_paths(self, jobid: Any) -> list[str]:
        """Files holding the job's output, reported to front doors on failure."""
        return []

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watching; jobs are cancelled by the controller before this is called."""
