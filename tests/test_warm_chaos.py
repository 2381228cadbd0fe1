"""Warm workers under random use: tasks short and long, cancels, workers killed, grow and shrink.

Tasks held in a busy worker move to one with room (`_rebalance`), a killed worker's tasks are
resubmitted by the rules, workers come and go: whatever the order, every handle resolves once,
no attempt runs twice (each task's process writes its attempt's id as it starts), and no
process is left. Seeded: a failure names its seed.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ensemble_core.ensemble import Ensemble
from ensemble_core.events import Outcome
from ensemble_core.jobs import JobHandle
from ensemble_core.members import create_member
from ensemble_core.members.warm import WORKER_MODULE
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from ensemble_core.testing.processes import children_of, processes_with
from ensemble_core.testing.waiting import eventually

RULES = """
rules:
  - trigger: job-node-failure
    action: {name: resubmit, repetitions: 2}
"""
STEPS = 60


@pytest.mark.parametrize("seed", range(3))
def test_warm_workers_run_every_attempt_once_whatever_happens(tmp_path: Path, seed: int) -> None:
    chance = random.Random(seed)
    marker = f"chaos-{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    member = create_member(
        "local",
        log_dir=str(tmp_path / "logs"),
        cores=8,
        workers=2,
        max_workers=4,
        worker_cores=2,
        idle_seconds=None,
    )
    ensemble = Ensemble(member, parse(RULES, "chaos.yaml"))
    ensemble.start()
    calls: Counter[int] = Counter()
    handles: list[JobHandle] = []
    long: list[JobHandle] = []
    try:
        for _ in range(STEPS):
            step = chance.random()
            if step < 0.6:
                seconds = chance.choice(["0", "0.1", "0.3", "1", "30"])
                script = f'echo "$ENSEMBLE_JOB_ID" >> {runs}; sleep {seconds}'
                handle = ensemble.submit(JobSpec(command=["sh", "-c", script, marker]))
                handle.add_done_callback(lambda done: calls.update([done.key]))
                handles.append(handle)
                if seconds == "30":
                    long.append(handle)
            elif step < 0.75 and handles:
                ensemble.cancel(chance.choice(handles))
            elif step < 0.85:
                if workers := our_workers():
                    os.kill(chance.choice(workers), signal.SIGKILL)
            else:
                name = chance.choice(["grow", "shrink"])
                ensemble.request_action({"name": name, "value": chance.choice([1, 2])})
            time.sleep(chance.choice([0, 0.05, 0.2]))
        for handle in long:
            ensemble.cancel(handle)
        assert eventually(lambda: all(h.done() for h in handles), 90), [
            (h.key, h.spec.command[2]) for h in handles if not h.done()
        ]
    finally:
        ensemble.close()

    assert calls == Counter(h.key for h in handles)  # each resolved, and once
    started = Counter(runs.read_text().split()) if runs.exists() else Counter()
    assert [attempt for attempt, times in started.items() if times > 1] == []
    for handle in handles:
        assert handle.outcome in (Outcome.SUCCESS, Outcome.CANCELLED, Outcome.NODE_FAILURE), (
            handle.outcome,
            handle.reason,
        )
    assert eventually(lambda: not processes_with(marker), 15), processes_with(marker)
    assert eventually(lambda: not our_workers(), 15)


def our_workers() -> list[int]:
    """The warm workers this process started (the local member's jobs are its children)."""
    return [pid for pid, command in children_of(os.getpid()) if WORKER_MODULE in command]
