"""Events/s through the controller's event path: job table, metrics and 20 rules over 10 groups.

Replays the recorded Flux journal of 300 jobs (`tests/fixtures/flux/journal-300.jsonl`) many
times, each job assigned to one of 10 groups, straight into the controller's event handler on
one thread: what a member's event stream costs the core. Target: 100,000 events/s.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from pathlib import Path

from ensemble_core.ensemble import Ensemble
from ensemble_core.events import JobEvent
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.members.base import Member
from ensemble_core.rules.schema import EnsembleFile
from ensemble_core.spec import JobSpec

JOURNAL = Path(__file__).parents[1] / "tests" / "fixtures" / "flux" / "journal-300.jsonl"
GROUPS = [f"g{i}" for i in range(10)]
REPEATS = 100


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


def main() -> dict[str, float]:
    records = [json.loads(line) for line in JOURNAL.read_text().splitlines()]
    jobids = sorted({record["id"] for record in records})
    config = EnsembleFile.model_validate({"rules": twenty_rules()})
    ensemble = Ensemble(NullMember(), config)
    events = []
    for repeat in range(REPEATS):
        for record in records:
            events.append(
                JobEvent(
                    (repeat, record["id"]), record["name"], record["timestamp"], record["context"]
                )
            )
    for repeat in range(REPEATS):
        for index, jobid in enumerate(jobids):
            group = GROUPS[index % len(GROUPS)]
            handle = JobHandle(repeat * 1000 + index, JobSpec(command=["true"], group=group))
            attempt: Attempt = handle.attempts[0]
            attempt.member_id = (repeat, jobid)
            ensemble._active[handle.key] = handle
            ensemble._by_member_id[attempt.member_id] = (handle, attempt)
    started = time.perf_counter()
    for event in events:
        ensemble._on_event(event)
    elapsed = time.perf_counter() - started
    ensemble._loop.run_until_complete(asyncio.sleep(0))  # let the few grow actions finish
    ensemble._loop.close()
    finished = sum(entry["finished"] for entry in ensemble.metrics.summary().values())
    assert finished == len(jobids) * REPEATS, finished
    rate = len(events) / elapsed
    print(
        f"rule engine: {len(events):,} events ({len(jobids) * REPEATS:,} jobs, 10 groups, "
        f"20 rules) in {elapsed:.2f} s = {rate:,.0f} events/s on one core "
        f"(python {platform.python_version()}); target 100,000 events/s"
    )
    return {"events_per_second": rate}


if __name__ == "__main__":
    main()
