"""Events/s through the controller's event path: job table, metrics and 20 rules over 10 groups.

Replays the recorded Flux journal of 300 jobs (`tests/fixtures/flux/journal-300.jsonl`) many
times, each job assigned to one of 10 groups, straight into the controller's event handler on
one thread: what a member's event stream costs the core. Target: 100,000 events/s. The same again
with the state journal written as the controller writes it (issue 13: at most 15% slower).
"""

from __future__ import annotations

import asyncio
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from ensemble_core.ensemble import Ensemble
from ensemble_core.events import JobEvent
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.members.base import Member
from ensemble_core.rules.schema import EnsembleFile
from ensemble_core.spec import JobSpec
from ensemble_core.state import CHECK_SECONDS, StateJournal

JOURNAL = Path(__file__).parents[1] / "tests" / "fixtures" / "flux" / "journal-300.jsonl"
GROUPS = [f"g{i}" for i in range(10)]
REPEATS = 100
ROUNDS = 5
#: Events handled between two looks at the clock.
SLICE = 1024


class NullMember(Member):
    """Takes actions and does nothing: the benchmark measures the core alone."""

    async def start(self, emit):
        return None

    async def submit(self, spec):
        return None

    async def cancel(self, jobid):
        return None

    async def close(self):
        return None


def twenty_rules() -> list[dict]:
    """Two rules per group: a job-event trigger and a metric rule, as a real rule set has."""
    rules = []
    for group in GROUPS:
        rules.append(
            {
                "trigger": "job-finish",
                "group": group,
                "action": {"name": "grow", "repetitions": 3, "backoff": 50},
            }
        )
        rules.append(
            {
                "trigger": "metric",
                "name": f"mean.{group}-duration",
                "when": "> 3600",
                "action": {"name": "shrink"},
            }
        )
    return rules


def replay(journal: StateJournal | None) -> tuple[float, float]:
    """Events per second and per CPU second of this process through the event handler; with a
    journal, written as the controller writes it (asked every CHECK_SECONDS whether a flush is
    due; written by the journal's writer process)."""
    records = [json.loads(line) for line in JOURNAL.read_text().splitlines()]
    jobids = sorted({record["id"] for record in records})
    config = EnsembleFile.model_validate({"rules": twenty_rules()})
    ensemble = Ensemble(NullMember(), config, state=journal)
    events = []
    for repeat in range(REPEATS):
        for record in records:
            member_id = repeat * 10**12 + record["id"]
            events.append(
                JobEvent(member_id, record["name"], record["timestamp"], record["context"])
            )
    specs = {group: JobSpec(command=["true"], group=group) for group in GROUPS}
    for repeat in range(REPEATS):
        for index, jobid in enumerate(jobids):
            handle = JobHandle(repeat * 1000 + index, specs[GROUPS[index % len(GROUPS)]])
            attempt: Attempt = handle.attempts[0]
            attempt.member_id = repeat * 10**12 + jobid
            ensemble._active[handle.key] = handle
            ensemble._by_member_id[attempt.member_id] = (handle, attempt)
    # Between slices of events, the question a controller's timer asks every CHECK_SECONDS: both
    # ways loop alike, so the journal is charged only for what it does.
    slices = [events[start : start + SLICE] for start in range(0, len(events), SLICE)]
    on_event = ensemble._on_event
    # What was built above stands for the queue's events, which a real member makes one at a
    # time: frozen, so the garbage collector's full passes do not walk it again and again.
    gc.collect()
    gc.freeze()
    cpu, started = time.process_time(), time.perf_counter()
    check_at = started + CHECK_SECONDS
    for events_slice in slices:
        for event in events_slice:
            on_event(event)
        if journal is not None and time.perf_counter() > check_at:
            if journal.due():
                ensemble.flush_state(durable=False)
            check_at = time.perf_counter() + CHECK_SECONDS
    if journal is not None:
        ensemble.flush_state()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.unfreeze()
    ensemble._loop.run_until_complete(asyncio.sleep(0))  # let the few grow actions finish
    ensemble._loop.close()
    finished = sum(entry["finished"] for entry in ensemble.metrics.summary().values())
    assert finished == len(jobids) * REPEATS, finished
    if journal is not None:
        assert journal.outcomes() == {"success": finished}
        journal.close()
    return len(events) / elapsed, len(events) / cpu


def main() -> dict[str, float]:
    """Rounds of each way, taking turns; the medians."""
    plain: list[tuple[float, float]] = []
    journaled: list[tuple[float, float]] = []
    for _ in range(ROUNDS):
        plain.append(replay(None))
        with tempfile.TemporaryDirectory(prefix="ensemble-state-") as directory:
            journaled.append(replay(StateJournal(directory)))
    rate, cpu_rate = (statistics.median(values) for values in zip(*plain, strict=True))
    with_journal, cpu_with_journal = (
        statistics.median(values) for values in zip(*journaled, strict=True)
    )
    events = len(JOURNAL.read_text().splitlines()) * REPEATS
    share, cpu_share = with_journal / rate, cpu_with_journal / cpu_rate
    print(
        f"rule engine: {events:,} events ({REPEATS * 300:,} jobs, 10 groups, 20 rules), median "
        f"of {ROUNDS}: {rate:,.0f} events/s ({cpu_rate:,.0f} per CPU second); with the state "
        f"journal {with_journal:,.0f} events/s = {share:.0%} ({cpu_with_journal:,.0f} per CPU "
        f"second = {cpu_share:.0%}) (python {platform.python_version()}); targets: 100,000 "
        "events/s, the journal at least 85%"
    )
    return {"events_per_second": rate, "with_journal": with_journal}


if __name__ == "__main__":
    main()
