"""A member that replays recorded Flux journals for fresh job ids, in this process.

Each submitted job gets the event sequence of one recorded job (cycling through the recording),
with its context as recorded and its timestamps moved to now. What kind of job it replays
(`success`, `fail-exit1`, `timeout`, ...: the `kind` field of `journal-basic.jsonl`; jobs
without one are `success`) is `kind_of(spec)`: by default the spec's `attributes["replay"]`,
so a test chooses outcomes per job (or per attempt). The kind `hold` plays a successful job up
to its `start`, `queued` up to its `priority` (a job waiting in the queue); both then wait for
`finish_held` or a cancel, which plays the recorded `cancel` job's end.

`speed=0` emits a job's events at once (the core's cost alone: the million-job benchmark);
`speed=1` keeps the recorded gaps between them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.members.base import TOKEN_ATTRIBUTE, EmitEvent, Member
from ensemble_core.spec import JobSpec

#: (event name, seconds after the job's first event, context)
Step = tuple[str, float, dict[str, Any]]
HOLD = "hold"
#: A job that waits in the queue: played up to its `priority` (no `alloc`, no `start`).
QUEUED = "queued"
_HELD_AFTER = {HOLD: "start", QUEUED: "priority"}


def load_patterns(paths: Iterable[Path]) -> dict[str, list[list[Step]]]:
    """Every recorded job of these journals as a pattern, grouped by its kind."""
    jobs: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            if "id" in record:
                jobs[(str(path), record["id"])].append(record)
    patterns: dict[str, list[list[Step]]] = defaultdict(list)
    for records in jobs.values():
        start = records[0]["timestamp"]
        steps = [(r["name"], r["timestamp"] - start, r.get("context") or {}) for r in records]
        patterns[records[0].get("kind", "success")].append(steps)
    return dict(patterns)


class ReplayMember(Member):
    """Recorded Flux jobs, replayed; no process runs."""

    name = "replay"

    def __init__(
        self,
        journals: Iterable[Path],
        *,
        speed: float = 0.0,
        kind_of: Callable[[JobSpec], str] | None = None,
        remember: bool = False,
    ) -> None:
        self.patterns = load_patterns(journals)
        #: Keep every job's events, so that a restarted controller can adopt the jobs.
        self.remember = remember
        self.speed = speed
        self.kind_of = kind_of or _attribute_kind
        self._cycles = {kind: itertools.cycle(steps) for kind, steps in self.patterns.items()}
        self._ids = itertools.count(1)
        #: Jobs waiting for `finish_held` (or a cancel): id -> the last step they played.
        self._held: dict[int, str] = {}
        #: Every event emitted per job, and the job of each token: what `adopt` replays.
        self._history: dict[int, list[JobEvent]] = defaultdict(list)
        self._tokens: dict[str, int] = {}
        self._playing: dict[int, asyncio.TimerHandle] = {}
        self._emit: EmitEvent = lambda event: None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, emit: EmitEvent) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()

    async def submit(self, spec: JobSpec) -> int:
        kind = self.kind_of(spec)
        jobid = next(self._ids)
        if self.remember and TOKEN_ATTRIBUTE in spec.attributes:
            self._tokens[spec.attributes[TOKEN_ATTRIBUTE]] = jobid
        if kind in _HELD_AFTER:
            steps = next(self._cycles["success"])
            steps = steps[: 1 + _index_of(_HELD_AFTER[kind], steps)]
            self._held[jobid] = _HELD_AFTER[kind]
        elif kind in self._cycles:
            steps = next(self._cycles[kind])
        else:
            raise ValueError(f"no recorded job of kind {kind!r}: {', '.join(self.patterns)}")
        assert self._loop is not None
        self._loop.call_soon(self._play, jobid, steps, time.time())
        return jobid

    async def cancel(self, jobid: Any) -> None:
        if jobid not in self._held:
            return  # it ends as recorded, or has ended: Flux ignores a late cancel too
        self._held.pop(jobid, None)
        playing = self._playing.pop(jobid, None)
        if playing is not None:
            playing.cancel()
        steps = next(self._cycles["cancel"])
        self._play(jobid, steps[_index_of("exception", steps) :], time.time())

    def finish_held(self, count: int) -> list[int]:
        """End `count` held jobs (oldest first) as a recorded successful job ends; their ids.
        Call it on the loop's thread."""
        ending = sorted(self._held)[:count]
        for jobid in ending:
            last = self._held.pop(jobid)
            steps = next(self._cycles["success"])
            self._play(jobid, steps[_index_of(last, steps) + 1 :], time.time())
        return ending

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """The jobs this member still knows (by id, else by token); their events so far are
        emitted again once this returns, then they go on as recorded."""
        found = {}
        for member_id, token in jobs:
            jobid = member_id if member_id in self._history else self._tokens.get(token)
            if jobid is not None:
                found[token] = jobid
        assert self._loop is not None
        for jobid in found.values():
            for event in list(self._history[jobid]):
                self._loop.call_soon(self._emit, event)
        return found

    def _record_and_emit(self, event: JobEvent) -> None:
        self._history[event.jobid].append(event)
        self._emit(event)

    async def close(self) -> None:
        for timer in self._playing.values():
            timer.cancel()
        self._playing.clear()

    def _play(self, jobid: int, steps: list[Step], origin: float, index: int = 0) -> None:
        """Emit the steps due by now; wait (in recorded time) for the next one."""
        emit = self._record_and_emit if self.remember else self._emit
        if not self.speed:
            for name, at, context in steps[index:]:
                emit(JobEvent(jobid, name, origin + at, context))
            return
        self._playing.pop(jobid, None)
        offset = steps[index][1]
        while index < len(steps):
            name, at, context = steps[index]
            delay = (at - offset) * self.speed
            if delay > 0:
                assert self._loop is not None
                timer = self._loop.call_later(delay, self._play, jobid, steps[index:], origin)
                self._playing[jobid] = timer
                return
            emit(JobEvent(jobid, name, origin + at, context))
            index += 1


def _index_of(name: str, steps: list[Step]) -> int:
    return next(i for i, step in enumerate(steps) if step[0] == name)


def _attribute_kind(spec: JobSpec) -> str:
    return spec.attributes.get("replay", "success")
