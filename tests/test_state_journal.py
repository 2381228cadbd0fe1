"""The state journal writes every row of a flush, however many, and reads them back whole;
it opens the state of an earlier version.

A flush is written in statements of many rows (powers of two up to 1,024, `state_writer.insert`):
counts that are not a power of two, and jobs with earlier attempts, must all arrive.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sqlite3
from pathlib import Path

import pytest
from conftest import journal_dies

from ensemble_core import state, state_handoff
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.spec import JobSpec
from ensemble_core.state import StateJournal


def jobs(count: int) -> list[JobHandle]:
    """Every third job is still running; every fifth ended after a second attempt."""
    spec = JobSpec(command=["true"], group="g")
    handles = []
    for key in range(count):
        handle = JobHandle(key, spec)
        if key % 5 == 0:
            handle.attempts.insert(0, Attempt(spec, f"m{key}-1", AttemptRecord(1.0, 2.0, 3.0, 256)))
        last = handle.attempts[-1]
        last.member_id, last.phase, last.record.submit_time = f"m{key}", 2, 4.0
        if key % 3:
            last.phase, last.record.status = 3, 0
            handle.resolve(Outcome.SUCCESS, "exited 0", [])
        handles.append(handle)
    return handles


@pytest.mark.parametrize("count", [1, 1023, 1025, 2_500])
def test_every_row_of_a_flush_is_written(tmp_path: Path, count: int):
    journal = StateJournal(tmp_path / "state")
    for handle in jobs(count):
        journal.changed(handle)
    journal.flush()
    # A short run is written by the controller; a big flush starts the writer process.
    assert (journal.handoff.writer is not None) == (count >= state_handoff.WRITER_ROWS)
    open_jobs = sum(1 for key in range(count) if key % 3 == 0)
    expected = {"success": count - open_jobs, "open": open_jobs}
    assert journal.outcomes() == {outcome: n for outcome, n in expected.items() if n}
    journal_dies(journal)  # no close, no end recorded

    saved = StateJournal(tmp_path / "state").previous()
    assert saved is not None
    assert [job.key for job in saved.jobs] == [key for key in range(count) if key % 3 == 0]
    for job in saved.jobs:
        assert job.attempts[-1].member_id == f"m{job.key}"
        if job.key % 5 == 0:
            assert [a.member_id for a in job.attempts] == [f"m{job.key}-1", f"m{job.key}"]
            assert job.attempts[0].record.status == 256


def test_a_state_written_before_repeated_events_were_kept_resumes(tmp_path: Path):
    """State directories of the version before `repeats` existed gain the column on open."""
    directory = tmp_path / "state"
    directory.mkdir()
    db = sqlite3.connect(directory / "state.db")
    db.executescript(state._SCHEMA.replace(", repeats", ""))
    spec = JobSpec(command=["true"], group="g")
    db.execute("INSERT INTO specs VALUES (1, ?)", (spec.model_dump_json(),))
    db.execute("INSERT INTO meta VALUES ('run_id', ?)", (pickle.dumps("old"),))
    db.execute(
        "INSERT INTO jobs VALUES (7, NULL, 1, 0, NULL, NULL, 1, 1, 'old.7.1', 42, 2, 0,"
        " 1.0, 2.0, NULL, NULL, NULL)"
    )
    db.commit()
    db.close()

    journal = StateJournal(directory)
    saved = journal.previous()
    assert saved is not None and [job.key for job in saved.jobs] == [7]
    (attempt,) = saved.jobs[0].attempts
    assert (attempt.member_id, attempt.phase, attempt.repeats) == (42, 2, ())
    handle = JobHandle(7, spec)
    handle.attempts = [attempt]
    attempt.repeats = (("priority", 2.5), ("exception", 3.0))
    journal.kept_repeats = frozenset({"exception"})  # a rule reacts to exceptions, none to priority
    journal.changed(handle)
    journal.flush()
    journal_dies(journal)

    (job,) = StateJournal(directory).previous().jobs
    assert job.attempts[0].repeats == (("exception", 3.0),)


def ready(journal: StateJournal) -> StateJournal:
    """The journal once its writer process is up (until then the controller writes)."""
    journal.handoff.start()
    journal.set_meta(probe=1)
    journal.flush()  # held until the writer is ready, and written by it
    assert journal.handoff.state == "ready"
    return journal


def test_a_controller_that_dies_leaves_its_last_flush_written_before_the_next_reads(
    tmp_path: Path,
):
    """What was handed to the writer is written although the controller died right after, and
    the next controller reads only once it is (it waits for the writer's lock)."""
    journal = ready(StateJournal(tmp_path / "state"))
    for handle in jobs(20_000):
        journal.changed(handle)
    journal.flush(wait=False)  # handed over, not waited for
    journal_dies(journal)

    saved = StateJournal(tmp_path / "state").previous()
    assert saved is not None
    assert len(saved.jobs) == sum(1 for key in range(20_000) if key % 3 == 0)


def test_a_killed_writer_leaves_the_controller_writing_its_journal_itself(tmp_path: Path):
    journal = ready(StateJournal(tmp_path / "state"))
    journal.handoff.writer.kill()
    journal.handoff.writer.wait()
    for handle in jobs(10):
        journal.changed(handle)
    journal.flush()
    assert journal.handoff.state == "gone"
    assert journal.outcomes() == {"success": 6, "open": 4}
    journal.close()


def test_flushes_a_killed_writer_had_not_written_are_written_by_the_controller(tmp_path: Path):
    """Flushes handed over without waiting, still in the pipe when the writer is killed, are
    kept until written: the controller writes them itself, in order, once it knows."""
    journal = ready(StateJournal(tmp_path / "state"))
    writer = journal.handoff.writer
    os.kill(writer.pid, signal.SIGSTOP)  # reads nothing more (small flushes: the pipe holds them)
    handles = jobs(30)
    for start in range(0, 30, 10):
        for handle in handles[start : start + 10]:
            journal.changed(handle)
        journal.flush(wait=False)
    writer.kill()
    writer.wait()
    journal.flush()
    assert journal.handoff.state == "gone"
    assert journal.outcomes() == {"success": 20, "open": 10}
    journal.close()


def test_a_flush_is_awaited_while_the_loop_goes_on(tmp_path: Path):
    """`durable` returns once the writer wrote the flush, and not before; the loop runs
    meanwhile (the controller handles events while a submission waits for its intent)."""
    journal = ready(StateJournal(tmp_path / "state"))
    writer = journal.handoff.writer

    async def scenario() -> list[str]:
        said = []
        os.kill(writer.pid, signal.SIGSTOP)
        for handle in jobs(10):
            journal.changed(handle)
        waiting = asyncio.ensure_future(journal.durable(journal.flush(wait=False)))
        await asyncio.sleep(0.2)
        said.append("waiting" if not waiting.done() else "done too soon")
        os.kill(writer.pid, signal.SIGCONT)
        await asyncio.wait_for(waiting, 30)
        said.append("written")
        return said

    assert asyncio.run(scenario()) == ["waiting", "written"]
    reader = sqlite3.connect(tmp_path / "state" / "state.db")
    assert reader.execute("SELECT count(*) FROM jobs").fetchone() == (10,)
    reader.close()
    journal.close()


def test_a_wait_on_a_writer_killed_meanwhile_ends_with_the_flush_written(tmp_path: Path):
    journal = ready(StateJournal(tmp_path / "state"))
    writer = journal.handoff.writer

    async def scenario() -> None:
        os.kill(writer.pid, signal.SIGSTOP)
        for handle in jobs(10):
            journal.changed(handle)
        waiting = asyncio.ensure_future(journal.durable(journal.flush(wait=False)))
        await asyncio.sleep(0.1)
        writer.kill()
        await asyncio.wait_for(waiting, 30)

    asyncio.run(scenario())
    assert journal.handoff.state == "gone"
    assert journal.outcomes() == {"success": 6, "open": 4}
    journal.close()
