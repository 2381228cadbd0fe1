"""What the resume tests on the real queues share: the ensemble they kill and run again, the
tokened jobs a second member adopts, and the waiting and killing around them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

from flux_fake import Emitted

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


async def adopt_and_finish(
    seen: Emitted, jobs: list[tuple[Any, str]], long: str
) -> tuple[dict[str, Any], bool]:
    """A started member adopts `jobs`; the job of token `long` is cancelled once it runs; every
    job found is followed to its end. (What it found; whether it emitted nothing before
    `adopt` returned.)"""
    try:
        found = await seen.member.adopt(jobs)
        quiet = not seen.events  # nothing before the controller knows the ids
        await until_started(seen, found[long])
        await seen.member.cancel(found[long])
        await seen.until_clean(list(found.values()))
    finally:
        await seen.member.close()
    return found, quiet


def wait_for(condition: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
