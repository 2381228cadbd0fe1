"""Events that arrive before their job's id: one buffer for every member.

A member may report a job's first events before its `submit` call returns the id (Flux's journal
is faster than the submit RPC's answer; the local member emits while it submits). The controller
keeps them here while submissions are in flight and replays them once the id is known. Events of
ids that never become known (another user's job, a repeated event of an ended job) expire after
`MAX_AGE_SECONDS`, so the buffer stays small however long the run.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ensemble_core.events import JobEvent

MAX_AGE_SECONDS = 60.0


class OrphanEvents:
    def __init__(self, max_age: float = MAX_AGE_SECONDS) -> None:
        self.max_age = max_age
        self._events: dict[Any, list[JobEvent]] = {}
        self._arrivals: deque[tuple[float, Any]] = deque()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: JobEvent) -> None:
        now = time.monotonic()
        bucket = self._events.get(event.jobid)
        if bucket is None:
            bucket = self._events[event.jobid] = []
            self._arrivals.append((now, event.jobid))
        bucket.append(event)
        self._expire(now)

    def take(self, jobid: Any) -> list[JobEvent]:
        """The events held for `jobid`, in arrival order, and forget them."""
        return self._events.pop(jobid, None) or []

    def clear(self) -> None:
        self._events.clear()
        self._arrivals.clear()

    def _expire(self, now: float) -> None:
        arrivals = self._arrivals
        while arrivals and now - arrivals[0][0] > self.max_age:
            _, jobid = arrivals.popleft()
            self._events.pop(jobid, None)
