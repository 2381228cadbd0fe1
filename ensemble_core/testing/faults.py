"""A seeded fault injector around any member: what the core must survive, on demand.

`FaultyMember(inner, Faults(seed=7, submit_error=0.05, ...))` behaves as `inner` but, drawing
from one seeded random stream, makes member calls raise (`submit`, `cancel`, `grow`, `shrink`,
with error types the core does not special-case) and disturbs the event stream the way real
streams are disturbed:

- drop: an event is lost (never a job's `clean`: members guarantee the end of a job, by
  resuming their stream without loss, so a lost `clean` is a lost member, not a fault to mask);
- duplicate: an event arrives twice;
- delay: the stream pauses for `delay_seconds`, then delivers what it held, in order;
- break: the stream breaks for `break_seconds` and resumes as Flux's journal or a Kubernetes
  re-list does: the events held, preceded by up to `overlap` events already delivered.

The same seed gives the same faults for the same sequence of calls and events.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.members.base import EmitEvent, Member
from ensemble_core.spec import JobSpec


class InjectedFault(RuntimeError):
    """What a faulty member raises: an error type no layer handles specially."""


@dataclass(frozen=True)
class Faults:
    seed: int = 0
    submit_error: float = 0.0
    cancel_error: float = 0.0
    resize_error: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 0.05
    stream_break: float = 0.0
    break_seconds: float = 0.2
    overlap: int = 5


class FaultyMember(Member):
    """`inner`, with faults injected into its calls and its event stream."""

    def __init__(self, inner: Member, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        self.name = inner.name
        #: What was injected, by kind (for the invariants a test checks).
        self.injected: Counter[str] = Counter()
        self._random = random.Random(faults.seed)
        self._emit: EmitEvent = lambda event: None
        self._held: deque[JobEvent] = deque()
        self._delivered: deque[JobEvent] = deque(maxlen=max(faults.overlap, 1))
        self._paused = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, emit: EmitEvent) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self.inner.on_lost = lambda reason: self.on_lost(reason)
        await self.inner.start(self._on_event)

    async def submit(self, spec: JobSpec) -> Any:
        self._maybe_fail("submit", self.faults.submit_error)
        return await self.inner.submit(spec)

    async def cancel(self, jobid: Any) -> None:
        self._maybe_fail("cancel", self.faults.cancel_error)
        await self.inner.cancel(jobid)

    async def grow(self, value: int) -> str:
        self._maybe_fail("grow", self.faults.resize_error)
        return await self.inner.grow(value)

    async def shrink(self, value: int) -> str:
        self._maybe_fail("shrink", self.faults.resize_error)
        return await self.inner.shrink(value)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "faults": dict(self.injected)}

    def log_paths(self, jobid: Any) -> list[str]:
        return self.inner.log_paths(jobid)

    async def close(self) -> None:
        await self.inner.close()
        self._release()

    # Calls ------------------------------------------------------------------------------------

    def _maybe_fail(self, call: str, probability: float) -> None:
        if probability and self._random.random() < probability:
            self.injected[f"{call}-error"] += 1
            raise InjectedFault(f"injected fault: the member refused {call}")

    # The event stream -------------------------------------------------------------------------

    def _on_event(self, event: JobEvent) -> None:
        faults = self.faults
        draw = self._random.random
        if self._paused:
            self._held.append(event)
            return
        if faults.stream_break and draw() < faults.stream_break:
            self.injected["break"] += 1
            self._pause(faults.break_seconds, replay=list(self._delivered))
            self._held.append(event)
            return
        if faults.delay and draw() < faults.delay:
            self.injected["delay"] += 1
            self._pause(faults.delay_seconds, replay=[])
            self._held.append(event)
            return
        if event.name != "clean" and faults.drop and draw() < faults.drop:
            self.injected["drop"] += 1
            return
        self._deliver(event)
        if faults.duplicate and draw() < faults.duplicate:
            self.injected["duplicate"] += 1
            self._deliver(event)

    def _pause(self, seconds: float, replay: list[JobEvent]) -> None:
        """Hold events for `seconds`; on resuming, deliver `replay` (already seen) first."""
        self._paused = True
        self._held.extend(replay)
        assert self._loop is not None
        self._loop.call_later(seconds, self._release)

    def _release(self) -> None:
        self._paused = False
        while self._held and not self._paused:
            self._deliver(self._held.popleft())

    def _deliver(self, event: JobEvent) -> None:
        self._delivered.append(event)
        self._emit(event)
