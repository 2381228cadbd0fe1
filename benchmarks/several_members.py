"""Events/s through the controller's event path with three members behind the router, against
one member, in the same run (issue 15: at least 90% of the one-member rate).

The workload is `rule_engine.py`'s: the recorded Flux journal of 300 jobs replayed 100 times,
10 groups, 20 rules. With three members every job is placed by the router (least-backlog, so
the jobs spread over the three), and each event goes the whole way a member's event goes: the
member's emit (which the controller gives each member behind the router: each event of a job it
follows straight to the job, the job's start and end told to the router), the controller (which
also counts each job under its member). Five rounds of each, taking turns; medians.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import platform
import statistics
import time

from benchmarks.rule_engine import GROUPS, JOURNAL, REPEATS, NullMember, twenty_rules
from ensemble_core.ensemble import Ensemble
from ensemble_core.events import JobEvent
from ensemble_core.jobs import JobHandle
from ensemble_core.members.router import RouterMember
from ensemble_core.rules.schema import EnsembleFile
from ensemble_core.spec import JobSpec

ROUNDS = 5
MEMBERS = ("hpc", "cloud", "here")


class NumberingMember(NullMember):
    """Takes every job and does nothing; numbers them as a queue does, and keeps where its
    events go."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.emit = None

    async def start(self, emit):
        self.emit = emit

    async def submit(self, spec):
        return next(self._ids)


def replay(several: bool) -> tuple[float, float]:
    """Events per second (and per CPU second) through one member, or three behind a router."""
    records = [json.loads(line) for line in JOURNAL.read_text().splitlines()]
    jobids = sorted({record["id"] for record in records})
    config = EnsembleFile.model_validate({"rules": twenty_rules()})
    if several:
        parts = {name: NumberingMember() for name in MEMBERS}
        member = RouterMember(parts, policy="least-backlog")
    else:
        member = NullMember()
    ensemble = Ensemble(member, config)
    loop = ensemble._loop
    specs = {group: JobSpec(command=["true"], group=group) for group in GROUPS}
    deliver = {}  # (repeat, recorded id) -> (where events go, the id they carry)

    async def place() -> None:
        await member.start(ensemble._on_event)
        for repeat in range(REPEATS):
            for index, jobid in enumerate(jobids):
                handle = JobHandle(repeat * 1000 + index, specs[GROUPS[index % len(GROUPS)]])
                attempt = handle.attempts[0]
                if several:
                    attempt.member_id = await member.submit(attempt.spec)
                    name, _, inner = attempt.member_id.partition("/")
                    deliver[repeat, jobid] = (member.named(name).emit, int(inner))
                else:
                    attempt.member_id = repeat * 10**12 + jobid
                    deliver[repeat, jobid] = (ensemble._on_event, attempt.member_id)
                ensemble._active[handle.key] = handle
                ensemble.follow_member_job(attempt.member_id, (handle, attempt))

    loop.run_until_complete(place())
    events = []
    for repeat in range(REPEATS):
        for record in records:
            emit, jobid = deliver[repeat, record["id"]]
            events.append(
                (emit, JobEvent(jobid, record["name"], record["timestamp"], record["context"]))
            )
    gc.collect()  # what was built above stands for the queue's events: see rule_engine.py
    gc.freeze()
    cpu, started = time.process_time(), time.perf_counter()
    for emit, event in events:
        emit(event)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.unfreeze()
    loop.run_until_complete(asyncio.sleep(0))  # let the few grow actions finish
    loop.close()
    finished = sum(entry["finished"] for entry in ensemble.metrics.summary().values())
    assert finished == len(jobids) * REPEATS, finished
    if several:
        per_member = ensemble.metrics.summary(members=True)
        assert sum(entry["finished"] for entry in per_member.values()) == finished
        assert len(per_member) == len(MEMBERS), per_member  # the jobs spread over all three
    return len(events) / elapsed, len(events) / cpu


def main() -> dict[str, float]:
    one: list[tuple[float, float]] = []
    three: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        one.append(replay(several=False))
        three.append(replay(several=True))
    rate, cpu_rate = (statistics.median(values) for values in zip(*one, strict=True))
    routed, cpu_routed = (statistics.median(values) for values in zip(*three, strict=True))
    events = len(JOURNAL.read_text().splitlines()) * REPEATS
    print(
        f"several members: {events:,} events ({REPEATS * 300:,} jobs, 10 groups, 20 rules), "
        f"median of {ROUNDS}: one member {rate:,.0f} events/s ({cpu_rate:,.0f} per CPU second); "
        f"three members routed {routed:,.0f} events/s = {routed / rate:.0%} "
        f"({cpu_routed:,.0f} per CPU second = {cpu_routed / cpu_rate:.0%}) "
        f"(python {platform.python_version()}); target: at least 90%"
    )
    return {"one_member": rate, "three_members": routed}


if __name__ == "__main__":
    main()
