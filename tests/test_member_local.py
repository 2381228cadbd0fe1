"""The local member: real processes with Flux's events and real timeout, oom and unsatisfiable."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.members import create_member
from ensemble_core.members.local import LocalMember
from ensemble_core.spec import JobSpec

NORMAL_ORDER = ["submit", "validate", "depend", "priority", "alloc", "start", "finish", "release",
                "free", "clean"]  # fmt: skip


def run_jobs(member: LocalMember, specs: list[JobSpec], during=None, timeout: float = 30):
    """Submit specs, run until every job is clean; return (ids, events by id)."""
    events: defaultdict[int, list[JobEvent]] = defaultdict(list)

    async def main():
        done = asyncio.Event()
        ids: list[int] = []

        def emit(event: JobEvent) -> None:
            events[event.jobid].append(event)
            cleaned = sum(1 for job in events.values() if job[-1].name == "clean")
            if cleaned == len(specs):
                done.set()

        await member.start(emit)
        for spec in specs:
            ids.append(await member.submit(spec))
        if during is not None:
            await during(member, ids)
        await asyncio.wait_for(done.wait(), timeout)
        await member.close()
        return ids

    ids = asyncio.run(main())
    return ids, events


def outcome_of(events: list[JobEvent]) -> AttemptRecord:
    record = AttemptRecord()
    for event in events:
        record.observe(event)
    return record


def test_success_and_failure_speak_flux(log_dir):
    member = LocalMember(log_dir=log_dir)
    ids, events = run_jobs(
        member,
        [JobSpec(command=["echo", "hi"], group="g"), JobSpec(command=["sh", "-c", "exit 3"])],
    )
    assert [e.name for e in events[ids[0]]] == NORMAL_ORDER
    assert outcome_of(events[ids[0]]).outcome is Outcome.SUCCESS
    failed = outcome_of(events[ids[1]])
    assert (failed.outcome, failed.exit_code) == (Outcome.FAILED, 3)
    assert Path(member.log_paths(ids[0])[-1]).read_text() == "hi\n"


def test_missing_command_fails_with_127_and_says_why(log_dir):
    member = LocalMember(log_dir=log_dir)
    ids, events = run_jobs(member, [JobSpec(command=["no-such-command-xyz"])])
    assert outcome_of(events[ids[0]]).exit_code == 127
    stderr = next(p for p in member.log_paths(ids[0]) if p.endswith(".err"))
    assert "no-such-command-xyz" in Path(stderr).read_text()


def test_walltime_is_enforced_as_timeout(log_dir):
    ids, events = run_jobs(
        LocalMember(log_dir=log_dir), [JobSpec(command=["sleep", "30"], walltime=0.3)]
    )
    record = outcome_of(events[ids[0]])
    assert record.outcome is Outcome.TIMEOUT
    assert record.end_time - record.start_time < 5


def test_memory_limit_is_enforced_as_oom(log_dir):
    hog = "import time; b = bytearray(200 * 2**20); time.sleep(10)"
    ids, events = run_jobs(
        LocalMember(log_dir=log_dir), [JobSpec(command=["python3", "-c", hog], memory_mb=60)]
    )
    record = outcome_of(events[ids[0]])
    assert record.outcome is Outcome.OOM
    assert "exceeded the limit of 60 MB" in record.reason


def test_job_within_its_memory_succeeds(log_dir):
    small = "b = bytearray(10 * 2**20)"
    ids, events = run_jobs(
        LocalMember(log_dir=log_dir), [JobSpec(command=["python3", "-c", small], memory_mb=500)]
    )
    assert outcome_of(events[ids[0]]).outcome is Outcome.SUCCESS


def test_more_than_the_member_can_ever_give_is_unsatisfiable_at_once(log_dir):
    ids, events = run_jobs(
        LocalMember(cores=2, log_dir=log_dir),
        [JobSpec(command=["true"], nodes=10, tasks=10), JobSpec(command=["true"], tasks=3)],
    )
    for jobid in ids:
        names = [e.name for e in events[jobid]]
        assert "start" not in names and names[-1] == "clean"
        record = outcome_of(events[jobid])
        assert record.outcome is Outcome.UNSATISFIABLE
        assert "give the local member more cores" in record.reason


def test_single_core_jobs_run_side_by_side_up_to_capacity(log_dir):
    specs = [JobSpec(command=["sleep", "0.5"]) for _ in range(4)]
    ids, events = run_jobs(LocalMember(cores=2, log_dir=log_dir), specs)
    spans = sorted((outcome_of(events[i]).start_time, outcome_of(events[i]).end_time) for i in ids)
    # Two run at once, two wait for them: never three at the same time.
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2
    assert spans[1][0] < spans[0][1]  # the first two overlap
    assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.05


def test_cancel_pending_and_running(log_dir):
    async def cancel_both(member, ids):
        await asyncio.sleep(0.3)
        for jobid in ids:
            await member.cancel(jobid)

    member = LocalMember(cores=1, log_dir=log_dir)
    specs = [JobSpec(command=["sleep", "30"]), JobSpec(command=["sleep", "30"])]
    started = time.monotonic()
    ids, events = run_jobs(member, specs, during=cancel_both)
    assert time.monotonic() - started < 10
    assert [outcome_of(events[i]).outcome for i in ids] == [Outcome.CANCELLED] * 2
    assert "start" in [e.name for e in events[ids[0]]]
    assert "start" not in [e.name for e in events[ids[1]]]


def test_grow_and_shrink_change_capacity(log_dir):
    messages = []

    async def grow(member, ids):
        messages.append(await member.grow(5))

    member = LocalMember(cores=1, max_nodes=2, log_dir=log_dir)
    specs = [JobSpec(command=["sleep", "0.5"]) for _ in range(2)]
    ids, events = run_jobs(member, specs, during=grow)
    starts = sorted(outcome_of(events[i]).start_time for i in ids)
    assert starts[1] - starts[0] < 0.4  # the second node let the second job start at once
    assert messages == ["grew by 1 node(s) to 2: max_nodes is 2"]
    assert asyncio.run(member.shrink(3)) == (
        "shrank by 1 node(s) to 1 (only idle nodes are removed, never the last)"
    )


def test_multinode_job_needs_that_many_nodes(log_dir):
    member = LocalMember(cores=1, nodes=1, max_nodes=2, log_dir=log_dir)

    async def grow_later(member, ids):
        await asyncio.sleep(0.3)
        assert [e for e in ids if e in member._running] == []
        await member.grow(1)

    ids, events = run_jobs(member, [JobSpec(command=["true"], nodes=2, tasks=2)], during=grow_later)
    assert outcome_of(events[ids[0]]).outcome is Outcome.SUCCESS


def test_tasks_run_as_ranked_processes(log_dir):
    member = LocalMember(cores=4, log_dir=log_dir)
    command = ["sh", "-c", 'echo "rank $FLUX_TASK_RANK of $FLUX_JOB_SIZE"']
    run_jobs(member, [JobSpec(command=command, tasks=3, stdout=f"{log_dir}/t.out")])
    lines = sorted(Path(f"{log_dir}/t.out").read_text().splitlines())
    assert lines == ["rank 0 of 3", "rank 1 of 3", "rank 2 of 3"]


def test_environment_and_cwd(tmp_path, log_dir):
    member = LocalMember(log_dir=log_dir)
    spec = JobSpec(
        command=["sh", "-c", "echo $GREETING > here.txt"],
        environment={"GREETING": "hello"},
        cwd=str(tmp_path),
    )
    run_jobs(member, [spec])
    assert (tmp_path / "here.txt").read_text() == "hello\n"


def test_bad_settings_and_unknown_member():
    with pytest.raises(MemberError, match="at least 1"):
        LocalMember(cores=-1)
    with pytest.raises(MemberError, match="unknown member 'slurmz': choose one of local"):
        create_member("slurmz")
    with pytest.raises(MemberError, match="the local member has no setting image: it takes cores"):
        create_member("local", image="busybox")


def test_no_process_is_left_after_close(log_dir):
    marker = f"sleep-marker-{os.getpid()}"

    seen_running = []

    async def close_early(member, ids):
        await asyncio.sleep(0.3)
        seen_running.extend(_processes(marker))
        await member.close()

    member = LocalMember(log_dir=log_dir, grace_seconds=0.1)
    spec = JobSpec(command=["bash", "-c", f"exec -a {marker} sleep 30"])
    run_jobs(member, [spec], during=close_early)
    assert seen_running, "the job's process should have been running before close"
    time.sleep(0.2)
    assert _processes(marker) == []


def _processes(marker: str) -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(marker)]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""
