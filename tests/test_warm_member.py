"""Warm workers on the real local member: tasks forked from workers, reported as jobs.

Every test runs real worker processes (`ensemble_core.members.warm_worker`) as local jobs, and
real tasks in them: `python -P -m timeit STATEMENT` runs in-process (a forked child of the
worker), other commands are executed by the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import flux_fake
import pytest

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import MemberError
from ensemble_core.events import Outcome
from ensemble_core.members import create_member
from ensemble_core.members.local import LocalMember
from ensemble_core.members.warm import WarmMember
from ensemble_core.members.warm_protocol import encode
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from ensemble_core.testing.waiting import eventually

RETRY = """
rules:
  - trigger: job-oom
    action: {name: resubmit, resources: {mem_mb: x2}, repetitions: 3}
  - trigger: job-timeout
    action: {name: resubmit, resources: {walltime: x1.5}, repetitions: 2}
  - trigger: job-node-failure
    action: {name: resubmit, repetitions: 1}
"""


def in_process(statement: str) -> list[str]:
    """A command a worker runs in-process: `python -m timeit` runs the statement once."""
    return [sys.executable, "-P", "-m", "timeit", "-n", "1", "-r", "1", statement]


@contextlib.contextmanager
def warm_ensemble(log_dir: str, rules: str = "", **settings: object) -> Iterator[Ensemble]:
    member = create_member("local", log_dir=log_dir, **{"cores": 4, "workers": 2, **settings})
    ensemble = Ensemble(member, parse(rules or "rules: []", "test.yaml"))
    ensemble.start()
    try:
        yield ensemble
    finally:
        ensemble.close()


def gone(pid: int, within: float = 5.0) -> bool:
    """Whether process `pid` ends (and is reaped) within `within` seconds."""

    def ended() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    return eventually(ended, within, every=0.02)


def wait_for(path: Path, within: float = 30.0) -> str:
    """What `path` holds once it ends with a whole line (within `within` seconds)."""

    def written() -> str:
        text = path.read_text() if path.exists() else ""
        return text if text.endswith("\n") else ""

    text = eventually(written, within, every=0.02)
    assert text, f"{path} was not written"
    return text


def test_a_task_runs_forked_and_reports_the_events_of_a_job(tmp_path, log_dir):
    seen = tmp_path / "seen.json"
    probe = (
        "import json, os; json.dump({'cmdline': open('/proc/self/cmdline').read(), "
        "'tmp': os.environ['TMPDIR'], 'exists': os.path.isdir(os.environ['TMPDIR']), "
        f"'id': os.environ['ENSEMBLE_JOB_ID']}}, open({str(seen)!r}, 'w'))"
    )
    specs = [
        JobSpec(command=in_process(probe), group="probe"),
        JobSpec(command=["sh", "-c", "echo out; echo err >&2; exit 3"], group="fails"),
        JobSpec(command=["no-such-command-here"], group="missing"),
        JobSpec(command=["true"], group="quiet"),
    ]

    async def scenario() -> tuple[flux_fake.Emitted, list[str]]:
        member = WarmMember(LocalMember(log_dir=log_dir), workers=2)
        emitted = flux_fake.Emitted(member)
        await member.start(emitted.emit)
        try:
            ids = [await member.submit(spec) for spec in specs]
            await emitted.until_clean(ids, timeout=30)
        finally:
            await member.close()
        return emitted, ids

    emitted, ids = asyncio.run(scenario())
    probe_id, fails_id, missing_id, quiet_id = ids
    # Its output files were left empty: the worker removed them and said so, so the member
    # has none to look for; timeit's line kept the probe's output.
    assert emitted.logs[quiet_id] == [] and emitted.member._recent[quiet_id] == ("", "")
    assert [Path(path).name for path in emitted.logs[probe_id]] == [f"probe-{probe_id}.out"]
    assert [e.name for e in emitted.events[probe_id]] == [
        *("submit", "validate", "depend", "priority", "alloc", "start"),
        *("finish", "release", "free", "clean"),
    ]
    assert emitted.record(probe_id).outcome is Outcome.SUCCESS
    facts = json.loads(seen.read_text())
    assert "ensemble_core.members.warm_worker" in facts["cmdline"]  # forked, not executed
    assert facts["id"] == probe_id and facts["exists"] and not os.path.exists(facts["tmp"])
    failed = emitted.record(fails_id)
    assert (failed.outcome, failed.exit_code) == (Outcome.FAILED, 3)
    err, out = sorted(emitted.logs[fails_id])  # group-warm_N.err, .out
    assert (Path(out).read_text(), Path(err).read_text()) == ("out\n", "err\n")
    assert emitted.record(missing_id).exit_code == 127
    assert "start failed" in Path(emitted.logs[missing_id][0]).read_text()


def test_a_task_cancelled_as_it_is_submitted_reports_its_submission_first(log_dir):
    """A task's first events follow its submission's return (its submitter knows the id by
    then); a cancel in the same turn of the loop comes after them."""

    async def scenario() -> tuple[flux_fake.Emitted, str]:
        member = WarmMember(LocalMember(log_dir=log_dir), workers=1)
        emitted = flux_fake.Emitted(member)
        await member.start(emitted.emit)
        try:
            task_id = await member.submit(JobSpec(command=["true"]))
            assert emitted.events[task_id] == []  # not before the id is returned
            await member.cancel(task_id)
            await emitted.until_clean([task_id], timeout=30)
        finally:
            await member.close()
        return emitted, task_id

    emitted, task_id = asyncio.run(scenario())
    assert [e.name for e in emitted.events[task_id]] == [
        *("submit", "validate", "depend", "priority", "exception", "clean")
    ]
    assert emitted.record(task_id).outcome is Outcome.CANCELLED


def test_an_order_longer_than_a_read_reaches_its_worker_whole(log_dir):
    """The worker reads its connection 64 kB at a time: a task's order that is longer (its
    environment) is put together from many reads."""
    value = "0123456789" * 30_000
    check = f"import os; assert os.environ['LONG'] == {value[:10]!r} * 30_000"
    with warm_ensemble(log_dir, workers=1) as ensemble:
        handles = [
            ensemble.submit(JobSpec(command=in_process(check), environment={"LONG": value}))
            for _ in range(3)
        ]
        for handle in handles:
            assert handle.wait(30) is Outcome.SUCCESS, handle.reason


def test_oom_and_timeout_in_a_worker_are_resubmitted_by_the_rules(log_dir):
    hog = "import time; x = b'x' * (250 * 2**20); time.sleep(0.5)"
    with warm_ensemble(log_dir, RETRY, worker_memory_mb=300) as ensemble:
        oom = ensemble.submit(JobSpec(command=in_process(hog), memory_mb=100, group="hog"))
        slow = ensemble.submit(
            JobSpec(command=in_process("import time; time.sleep(1)"), walltime=0.8, group="slow")
        )
        assert oom.wait(60) is Outcome.SUCCESS, oom.reason
        assert slow.wait(60) is Outcome.SUCCESS, slow.reason
    assert [a.record.outcome for a in oom.attempts] == [Outcome.OOM, Outcome.OOM, Outcome.SUCCESS]
    assert [a.spec.memory_mb for a in oom.attempts] == [100, 200, 400]
    assert "exceeded the limit of 100 MB" in oom.attempts[0].record.reason
    # 400 MB fits no worker of 300 MB: the last attempt ran as a plain job of the local member.
    assert [type(a.member_id) for a in oom.attempts] == [str, str, int]
    assert [a.record.outcome for a in slow.attempts] == [Outcome.TIMEOUT, Outcome.SUCCESS]
    assert slow.attempts[0].record.reason == "timeout: resource allocation expired"


def test_idle_workers_make_room_for_a_plain_job(log_dir):
    # Two 1-core workers fill the member's 2 cores; a 2-core task fits no worker.
    with warm_ensemble(log_dir, cores=2, idle_seconds=600) as ensemble:
        warm = ensemble.submit(JobSpec(command=["true"]))
        assert warm.wait(30) is Outcome.SUCCESS
        wide = ensemble.submit(JobSpec(command=["true"], cores_per_task=2))
        assert wide.wait(30) is Outcome.SUCCESS, wide.reason
        again = ensemble.submit(JobSpec(command=["true"]))  # workers start again for it
        assert again.wait(30) is Outcome.SUCCESS
    assert isinstance(wide.member_id, int) and isinstance(again.member_id, str)


def test_cancel_a_running_and_a_waiting_task(tmp_path, log_dir):
    pid_file = tmp_path / "pid"
    sleeper = ["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"]
    # One worker, busy: the second task waits inside it (held to start when the first ends).
    with warm_ensemble(log_dir, workers=1) as ensemble:
        running = ensemble.submit(JobSpec(command=sleeper))
        waiting = ensemble.submit(JobSpec(command=["true"]))
        pid = int(wait_for(pid_file))
        ensemble.cancel(waiting)
        assert waiting.wait(10) is Outcome.CANCELLED
        assert waiting.attempts[0].record.start_time is None  # it never ran
        ensemble.cancel(running)
        assert running.wait(10) is Outcome.CANCELLED
        assert gone(pid)


def test_a_task_waiting_behind_a_long_one_moves_to_a_worker_with_room(log_dir):
    """Two busy workers each hold one task more (prefetch); one worker frees up while the other
    runs a long task: the task held behind the long one moves over instead of waiting for it."""
    with warm_ensemble(log_dir, workers=2) as ensemble:
        long = ensemble.submit(JobSpec(command=["sleep", "60"]))
        short = ensemble.submit(JobSpec(command=["sleep", "1"]))
        assert eventually(lambda: all(h.attempts[0].record.start_time for h in (long, short)))
        held = [ensemble.submit(JobSpec(command=["true"])) for _ in range(2)]
        assert [h.wait(20) for h in held] == [Outcome.SUCCESS, Outcome.SUCCESS]
        assert short.wait(1) is Outcome.SUCCESS
        assert not long.done()
        ensemble.cancel(long)
        assert long.wait(10) is Outcome.CANCELLED


def test_a_task_cancelled_as_it_moves_between_workers_is_cancelled(log_dir):
    """The cancel may reach a task's old worker after it gave the task back: the task is then
    cancelled where it is (waiting again), not run."""
    with warm_ensemble(log_dir, workers=2) as ensemble:
        long = [ensemble.submit(JobSpec(command=["sleep", "60"])) for _ in range(2)]
        assert eventually(lambda: all(h.attempts[0].record.start_time for h in long))
        held = [ensemble.submit(JobSpec(command=["sleep", "0.5"])) for _ in range(2)]
        ensemble.cancel(long[0])  # room: a held task may move as the cancel of another goes
        ensemble.cancel(held[0])
        ensemble.cancel(held[1])
        assert [h.wait(20) for h in held] == [Outcome.CANCELLED, Outcome.CANCELLED]
        ensemble.cancel(long[1])
        assert [h.wait(10) for h in long] == [Outcome.CANCELLED, Outcome.CANCELLED]


def test_a_killed_worker_ends_its_tasks_which_the_rules_resubmit(tmp_path, log_dir):
    marks = [tmp_path / f"task{i}" for i in range(2)]
    specs = [
        JobSpec(
            command=[
                "sh",
                "-c",
                f'echo "$$ $PPID $ENSEMBLE_JOB_ID $TMPDIR" >> {mark}; sleep 1.5',
            ],
            group=f"task{i}",
        )
        for i, mark in enumerate(marks)
    ]
    with warm_ensemble(log_dir, RETRY) as ensemble:
        handles = [ensemble.submit(spec) for spec in specs]
        task_pid, worker_pid, _, task_tmpdir = wait_for(marks[0]).split()
        wait_for(marks[1])
        os.kill(int(worker_pid), signal.SIGKILL)
        assert gone(int(task_pid)), "the worker's guard did not end its task"
        scratch = Path(task_tmpdir).parent  # the worker's, with its tasks' TMPDIRs
        assert scratch.name.startswith("ensemble-worker-")
        assert eventually(lambda: not scratch.exists(), 5), (
            "the worker's guard did not remove its scratch directory"
        )
        assert [h.wait(60) for h in handles] == [Outcome.SUCCESS, Outcome.SUCCESS]
    killed, other = handles
    assert [a.record.outcome for a in killed.attempts] == [Outcome.NODE_FAILURE, Outcome.SUCCESS]
    assert "ended while the task ran" in killed.attempts[0].record.reason
    assert len(other.attempts) == 1  # the other worker's task was not disturbed
    assert len(marks[0].read_text().splitlines()) == 2  # it ran again, once


def test_grow_shrink_and_idle_workers(log_dir):
    async def scenario() -> list[str]:
        member = WarmMember(
            LocalMember(cores=4, log_dir=log_dir), workers=1, max_workers=3, idle_seconds=None
        )
        emitted = flux_fake.Emitted(member)
        await member.start(emitted.emit)

        async def live(count: int) -> None:
            async with asyncio.timeout(30):
                while member.describe()["workers"] != count or any(
                    w.state == "submitted" for w in member._workers.values()
                ):
                    await asyncio.sleep(0.01)

        said = []
        try:
            said.append(await member.grow(5))
            await live(3)
            said.append(await member.shrink(5))
            await live(1)
            member.idle_seconds = 0.3
            for _ in range(2):  # after the first, the last worker leaves when idle; one starts
                task = await member.submit(JobSpec(command=["true"]))
                await emitted.until_clean([task])
                said.append(str(emitted.record(task).outcome))
                await live(0)
        finally:
            await member.close()
        return said

    assert asyncio.run(scenario()) == [
        "grew by 2 warm worker(s) to 3: max_workers is 3",
        "shrank by 2 warm worker(s) to 1 (never below 1): 2 stopped",
        "success",
        "success",
    ]


def test_a_backlog_grows_workers_within_max_workers(log_dir):
    backlog = """
logging: {heartbeat: 0.1}
rules:
  - trigger: metric
    name: queue.oldest-pending
    when: "> 0.2s"
    action: {name: grow, value: 1, repetitions: 8, cooldown: 0.2s}
"""
    with warm_ensemble(log_dir, backlog, workers=1, max_workers=3) as ensemble:
        handles = [
            ensemble.submit(JobSpec(command=["sleep", "0.4"], group="short")) for _ in range(12)
        ]
        assert {h.wait(60) for h in handles} == {Outcome.SUCCESS}
        details = [a["detail"] for a in ensemble.actions if a["action"] == "grow"]
        described = ensemble.member.describe()
    assert "grew by 1 warm worker(s) to 3" in details
    assert "grew by 0 warm worker(s) to 3: max_workers is 3" in details
    assert described["target_workers"] == 3 and described["workers"] <= 3


def test_workers_that_cannot_start_fail_the_tasks_with_the_reason(log_dir):
    with warm_ensemble(log_dir, worker_python="/no/such/python") as ensemble:
        handle = ensemble.submit(JobSpec(command=["true"]))
        assert handle.wait(30) is Outcome.FAILED
        later = ensemble.submit(JobSpec(command=["true"]))
        assert later.wait(30) is Outcome.FAILED
        described = ensemble.member.describe()
    assert handle.reason.startswith("failed: no warm worker could start: 3 workers in a row")
    assert "/no/such/python" in handle.reason
    assert later.reason == handle.reason
    assert "workers_failed" in described


def test_a_connection_without_the_secret_is_closed_unheard(log_dir):
    with warm_ensemble(log_dir, workers=1) as ensemble:
        host, _, port = ensemble.member.describe()["listening"].rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as intruder:
            challenge = json.loads(intruder.makefile().readline())
            assert set(challenge) == {"challenge"}
            intruder.sendall(encode({"op": "hello", "name": "w1", "proof": "0" * 64}))
            assert intruder.recv(100) == b""  # closed
        handle = ensemble.submit(JobSpec(command=["true"]))
        assert handle.wait(30) is Outcome.SUCCESS


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"worker_cores": 2}, "worker_cores: only applies with workers set"),
        ({"workers": 4, "max_workers": 2}, "max_workers: must be at least workers (4), got 2"),
        ({"workers": 0}, "workers: must be at least 1 (got 0)"),
        ({"workers": 2, "idle_seconds": "soon"}, "idle_seconds: must be a number"),
    ],
)
def test_warm_settings_are_checked_like_any_member_setting(settings, problem):
    with pytest.raises(MemberError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        create_member("local", **settings)


def test_workers_make_a_warm_member_around_the_chosen_one(log_dir):
    member = create_member("local", workers=3, worker_cores=2, log_dir=log_dir)
    assert isinstance(member, WarmMember) and isinstance(member.inner, LocalMember)
    assert (member.name, member.workers, member.max_workers, member.worker_cores) == (
        "local",
        3,
        3,
        2,
    )
    assert isinstance(create_member("local", log_dir=log_dir), LocalMember)


def test_a_worker_imports_without_collecting_and_freezes_what_it_imported(tmp_path):
    """A worker's imports run with the cyclic collector off (it went through every object of a
    large import again and again), which is on again afterwards, and what they made is frozen."""
    (tmp_path / "probe_module.py").write_text("import gc\nCOLLECTING = gc.isenabled()\n")
    probe = f"""
import gc, sys
sys.path.insert(0, {str(tmp_path)!r})
from ensemble_core.members.warm_worker import Worker
worker = Worker.__new__(Worker)
worker.name, worker._imported, worker._warned_threads = "w1", set(), False
assert worker._import(["probe_module", "no_such_module"]) == ["probe_module"]
import probe_module
assert not probe_module.COLLECTING and gc.isenabled() and gc.get_freeze_count() > 0
gc.disable()
worker._import(["json"])
assert not gc.isenabled()  # left as it was
"""
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
