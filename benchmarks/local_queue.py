"""The local member's cost per event with 100 jobs waiting against 10,000, per limiting resource.

For each resource that can limit a job (cores, GPUs, memory, whole nodes) the member has room for
four jobs of one kind (`true`) and the rest wait. Two events are timed, with the real member and
real processes:

- submit: the median time of the last 100 submissions (the queue then holds about 100 or
  10,000);
- end: the median time between two consecutive `clean` events while 4 jobs run and the queue
  drains 50 jobs: a job's end, the pass that follows and the next job's start; and this
  process's CPU time per end over those 50 (the member's share, less disturbed by the load
  of the machine than the wall time, which process starts dominate).

Target (issue 12): the cost with 10,000 waiting within 2x of the cost with 100. The script takes
no arguments; to measure another checkout, put it first on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import tempfile
import time
from typing import Any

from ensemble_core.events import JobEvent
from ensemble_core.members.local import LocalMember
from ensemble_core.spec import JobSpec

#: limiting resource -> (member settings, job fields): room for four jobs each time.
ROWS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "cores": ({"cores": 4}, {}),
    "gpus": ({"cores": 64, "gpus": 4}, {"gpus_per_task": 1}),
    "memory": ({"cores": 64, "memory_mb": 4 * 64}, {"memory_mb": 64}),
    "whole nodes": ({"cores": 2, "nodes": 4}, {"nodes": 1, "exclusive": True}),
}
RUNNING = 4
WAITING = (100, 10_000)
TIMED_SUBMITS = 100
TIMED_ENDS = 50


async def per_event(settings: dict[str, Any], fields: dict[str, Any], waiting: int, log_dir: str):
    """Seconds per submission, per job end and of this process's CPU per job end, with
    `waiting` jobs queued."""
    cleaned: list[float] = []
    cpu: list[float] = []
    enough = asyncio.Event()

    def emit(event: JobEvent) -> None:
        if event.name == "clean" and not enough.is_set():
            cleaned.append(time.perf_counter())
            cpu.append(time.process_time())
            if len(cleaned) > TIMED_ENDS:
                enough.set()

    member = LocalMember(log_dir=log_dir, **settings)
    await member.start(emit)
    spec = JobSpec(command=["true"], **fields)
    for _ in range(RUNNING + waiting - TIMED_SUBMITS):
        await member.submit(spec)
    submits = []
    for _ in range(TIMED_SUBMITS):
        started = time.perf_counter()
        await member.submit(spec)
        submits.append(time.perf_counter() - started)
    await enough.wait()
    await member.close()
    end = statistics.median(b - a for a, b in itertools.pairwise(cleaned))
    return statistics.median(submits), end, (cpu[-1] - cpu[0]) / TIMED_ENDS


def main() -> dict[str, dict[str, float]]:
    print(
        f"local queue: {RUNNING} `true` jobs run, {' or '.join(map(str, WAITING))} wait; "
        "submit = median of the last 100 submissions, end = median time from one job's end to "
        "the next (end, pass, next start); target: 10,000 waiting within 2x of 100"
    )
    print(f"{'limited by':<12} {'submit 100':>11} {'submit 10k':>11} {'ratio':>6} "
          f"{'end 100':>9} {'end 10k':>9} {'ratio':>6} "
          f"{'end CPU 100':>12} {'end CPU 10k':>12} {'ratio':>6}")  # fmt: skip
    figures = {}
    for name, (settings, fields) in ROWS.items():
        costs = {}
        for waiting in WAITING:
            with tempfile.TemporaryDirectory() as log_dir:
                costs[waiting] = asyncio.run(per_event(settings, fields, waiting, log_dir))
        (submit_small, end_small, cpu_small) = costs[100]
        (submit_large, end_large, cpu_large) = costs[10_000]
        print(
            f"{name:<12} {submit_small * 1e6:>9.1f}us {submit_large * 1e6:>9.1f}us "
            f"{submit_large / submit_small:>5.1f}x {end_small * 1e3:>7.2f}ms "
            f"{end_large * 1e3:>7.2f}ms {end_large / end_small:>5.1f}x "
            f"{cpu_small * 1e3:>10.2f}ms {cpu_large * 1e3:>10.2f}ms {cpu_large / cpu_small:>5.1f}x",
            flush=True,
        )
        figures[name] = {
            "submit_ratio": submit_large / submit_small,
            "end_ratio": end_large / end_small,
            "end_cpu_ratio": cpu_large / cpu_small,
        }
    return figures


if __name__ == "__main__":
    main()
