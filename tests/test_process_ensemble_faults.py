"""The controller apart under random use and random ends: every handle resolves exactly once.

Each seed submits a mix of real local jobs (that succeed, fail and are resubmitted, or sleep),
cancels some, asks for snapshots, and ends one way: the workflow closes, SIGTERM comes to one of
the child's threads, or the child is SIGKILLed. Job-per-task and warm workers alike. Then every
handle is resolved, each done callback ran once, the outcome fits the end, and no job is left.
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ensemble_core.events import Outcome
from ensemble_core.jobs import JobHandle
from ensemble_core.process_ensemble import open_apart
from ensemble_core.spec import JobSpec
from ensemble_core.testing.processes import processes_with, threads_of
from ensemble_core.testing.waiting import eventually

ENDS = ("close", "sigterm", "sigkill")
JOBS = 24


@pytest.mark.parametrize("warm", [False, True], ids=["job-per-task", "warm"])
@pytest.mark.parametrize("seed", range(3))
def test_every_handle_resolves_once_however_the_controller_ends(
    tmp_path: Path, seed: int, warm: bool
) -> None:
    chance = random.Random(seed * 2 + warm)
    end = ENDS[seed % len(ENDS)]
    marker = f"sleep 8{uuid.uuid4().int % 1000:03d}"
    retry = tmp_path / "retry.yaml"
    retry.write_text("rules:\n- trigger: job-fail\n  action: {name: resubmit, repetitions: 1}\n")
    settings: dict[str, object] = {"log_dir": str(tmp_path / "logs"), "cores": 8}
    if warm:  # room for the sleepers and the short tasks side by side, as cold
        settings.update(workers=2, worker_cores=4)
    ensemble = open_apart(member="local", rules=[str(retry)], member_settings=settings)
    calls: Counter[int] = Counter()
    handles: list[JobHandle] = []
    cancelled: set[int] = set()
    commands = [["true"], ["false"], ["sleep", "0.2"], marker.split()]

    def submit(command: list[str]) -> JobHandle:
        handle = ensemble.submit(JobSpec(command=command))
        handle.add_done_callback(lambda done: calls.update([done.key]))
        handles.append(handle)
        return handle

    for _ in range(JOBS):
        submit(chance.choices(commands, weights=[3, 3, 2, 1])[0])
        if chance.random() < 0.2:
            victim = chance.choice(handles)
            cancelled.add(victim.key)
            ensemble.cancel(victim)
        if chance.random() < 0.1:
            assert set(ensemble.snapshot()) >= {"groups", "actions"}
    # The short jobs end (the failing ones after their resubmission); then a few more come,
    # so that the end finds jobs running, waiting, and on their way to the child.
    short = [h for h in handles if h.spec.command != marker.split()]
    assert eventually(lambda: all(h.done() for h in short), 60)
    for _ in range(4):
        submit(chance.choice(commands))

    if end == "close":
        ensemble.close()
    else:
        threads = threads_of(ensemble.pid)
        taker = chance.choice(threads)
        os.kill(taker, signal.SIGTERM if end == "sigterm" else signal.SIGKILL)
    assert eventually(lambda: all(h.done() for h in handles), 60), [
        h.key for h in handles if not h.done()
    ]
    ensemble.close()  # again, or after the child's end: nothing left to do

    assert eventually(lambda: calls == Counter(h.key for h in handles), 5), calls
    for handle in short:
        if handle.key not in cancelled:
            expected = Outcome.FAILED if handle.spec.command == ["false"] else Outcome.SUCCESS
            assert handle.outcome is expected, (handle.outcome, handle.reason)
            assert len(handle.attempts) == (2 if expected is Outcome.FAILED else 1)
    for handle in handles:
        if handle.spec.command == marker.split():  # never ends by itself
            ended_by_sigkill = end == "sigkill" and handle.key not in cancelled
            expected = Outcome.FAILED if ended_by_sigkill else Outcome.CANCELLED
            assert handle.outcome is expected, (handle.outcome, handle.reason)
            if ended_by_sigkill:
                assert "controller process ended before the job did (killed by SIGKILL)" in (
                    handle.reason
                )
            else:
                assert handle.reason.startswith("cancelled"), handle.reason
        assert handle.outcome in (Outcome.SUCCESS, Outcome.FAILED, Outcome.CANCELLED)
        assert handle.reason, handle.outcome
    assert eventually(lambda: not processes_with(marker), 15), processes_with(marker)
