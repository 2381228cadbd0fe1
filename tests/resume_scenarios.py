"""What the resume tests on the real queues share: the ensemble they kill and run again, the
tokened jobs a second member adopts, and the waiting and killing around them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

from flux_fake import Emitted

from ensemble_core.events import Outcome
from ensemble_core.members.base import TOKEN_ATTRIBUTE
from ensemble_core.spec import JobSpec

#: Six `a` jobs; `b` once the third `a` succeeded (once in all, across every restart); `c` fails.
RUN = """
jobs:
  - {name: a, command: "sleep 0.5", count: 6}
  - {name: b, command: "true"}
  - {name: c, command: "sh -c 'exit 3'"}
rules:
  - trigger: start
    action: {name: submit, label: a}
  - trigger: start
    action: {name: submit, label: c}
  - trigger: metric
    name: count.a.success
    when: 3
    action: {name: submit, label: b}
"""
#: (submitted, success, failed) per group in the report of a run of `RUN` that ended.
COUNTS = {"a": (6, 6, 0), "b": (1, 1, 0), "c": (1, 0, 1)}


def counts(report: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {g: (c["submitted"], c["success"], c["failed"]) for g, c in report["groups"].items()}


def tokened(token: str, *command: str, **fields: Any) -> JobSpec:
    """A job as a controller with a state journal submits it: its token in its attributes."""
    return JobSpec(command=list(command), attributes={TOKEN_ATTRIBUTE: token}, **fields)


async def until_started(seen: Emitted, jobid: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not any(event.name == "start" for event in seen.events[jobid]):
            await asyncio.sleep(0.02)


#: The jobs a first member submits and a second adopts (token: command), and their outcomes as
#: the second tells them (it cancels `long`).
ADOPTED = {
    "true": ["true"],
    "exit3": ["sh", "-c", "echo bye >&2; exit 3"],
    "sleep": ["sleep", "2"],
    "long": ["sleep", "60"],
    "lost": ["sleep", "1"],
}
ADOPTED_OUTCOMES = {
    "true": Outcome.SUCCESS,
    "exit3": Outcome.FAILED,
    "sleep": Outcome.SUCCESS,
    "long": Outcome.CANCELLED,
    "lost": Outcome.SUCCESS,
}


async def adoption(
    started: Callable[[str], Awaitable[Emitted]], fields: Callable[[str], dict[str, Any]]
) -> tuple[Emitted, dict[str, Any], dict[str, Any], bool]:
    """A first member (`started("first")`) submits `ADOPTED` (each job's `fields(token)` added),
    waits for `true` and `exit3` to end, and closes, which leaves the jobs as they are. A second
    (`started("second")`) adopts them: by id, `lost` by its token alone, with a token never
    submitted and an id given with another token; it cancels `long` once it runs and follows
    every job found to its end. (What the second emitted, the ids, what it found, whether it
    emitted nothing before `adopt` returned.)"""
    first = await started("first")
    try:
        ids = {}
        for token, command in ADOPTED.items():
            ids[token] = await first.member.submit(tokened(token, *command, **fields(token)))
        await first.until_clean([ids["true"], ids["exit3"]])
    finally:
        await first.member.close()
    second = await started("second")
    jobs = [(ids[token], token) for token in ("true", "exit3", "sleep", "long")]
    jobs += [(None, "lost"), (None, "never"), (ids["true"], "other")]
    try:
        found = await second.member.adopt(jobs)
        quiet = not second.events  # nothing before the controller knows the ids
        await until_started(second, found["long"])
        await second.member.cancel(found["long"])
        await second.until_clean(list(found.values()))
    finally:
        await second.member.close()
    return second, ids, found, quiet


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
