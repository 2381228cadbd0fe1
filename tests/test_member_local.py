"""The local member: real processes with Flux's events and real timeout, oom and unsatisfiable."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

import pytest
from test_local_lifeline import started_as

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.members import create_member
from ensemble_core.members.local import LocalMember
from ensemble_core.members.local_output import MADE_DIRS, JobFiles
from ensemble_core.spec import JobSpec
from ensemble_core.testing.waiting import eventually

NORMAL_ORDER = ["submit", "validate", "depend", "priority", "alloc", "start", "finish", "release",
                "free", "clean"]  # fmt: skip


def run_jobs(
    member: LocalMember, specs: list[JobSpec], during=None, timeout: float = 30, emit=None
):
    """Submit specs, run until every job is clean; return (ids, events by id). Nothing may reach
    the event loop's exception handler (`emit`, if given, sees each event first and may raise)."""
    events: defaultdict[int, list[JobEvent]] = defaultdict(list)
    escaped: list[dict] = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: escaped.append(context)
        )
        done = asyncio.Event()
        ids: list[int] = []

        def record(event: JobEvent) -> None:
            events[event.jobid].append(event)
            cleaned = sum(1 for job in events.values() if job[-1].name == "clean")
            if cleaned == len(specs):
                done.set()
            if emit is not None:
                emit(event)

        await member.start(record)
        for spec in specs:
            ids.append(await member.submit(spec))
        if during is not None:
            await during(member, ids)
        await asyncio.wait_for(done.wait(), timeout)
        await member.close()
        return ids

    ids = asyncio.run(main())
    assert escaped == []
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


def test_tasks_get_the_environment_as_it_is_at_their_start_and_keep_the_marker(
    monkeypatch, tmp_path, log_dir
):
    member = LocalMember(cores=1, log_dir=log_dir)
    marker = f"{member._marker}={os.getpid()}"
    show = 'echo "late=$LATE"; env | grep ^ENSEMBLE_LOCAL_RUN_'
    specs = [
        JobSpec(command=["sh", "-c", f"sleep 0.3; {show}"], stdout=str(tmp_path / "first")),
        JobSpec(
            command=["sh", "-c", show],
            environment={member._marker: "the job's own"},
            stdout=str(tmp_path / "second"),
        ),
    ]

    async def change_the_environment(member, ids):
        monkeypatch.setenv("LATE", "yes")  # the first job runs, the second waits for its core

    run_jobs(member, specs, during=change_the_environment)
    assert (tmp_path / "first").read_text() == f"late=\n{marker}\n"
    assert (tmp_path / "second").read_text() == f"late=yes\n{marker}\n"


def test_bad_settings_and_unknown_member():
    with pytest.raises(MemberError, match="at least 1"):
        LocalMember(cores=-1)
    with pytest.raises(MemberError, match="unknown member 'slurmz': choose one of local"):
        create_member("slurmz")
    with pytest.raises(MemberError, match="image is a setting of the kubernetes member, but the"):
        create_member("local", image="busybox")
    with pytest.raises(MemberError, match="colour: the local member has no such setting: it takes"):
        create_member("local", colour="blue")


def test_no_process_is_left_after_close(log_dir):
    marker = f"sleep-marker-{os.getpid()}"

    seen_running = []

    async def close_early(member, ids):
        await asyncio.sleep(0.3)
        seen_running.extend(started_as(marker))
        await member.close()

    member = LocalMember(log_dir=log_dir, grace_seconds=0.1)
    spec = JobSpec(command=["bash", "-c", f"exec -a {marker} sleep 30"])
    run_jobs(member, [spec], during=close_early)
    assert seen_running, "the job's process should have been running before close"
    assert eventually(lambda: started_as(marker) == [], 10), started_as(marker)


def test_bad_output_and_reserve_after_settings():
    with pytest.raises(MemberError, match="output: must be one of job, group, run"):
        LocalMember(output="file")
    with pytest.raises(MemberError, match="reserve_after: must be 0 or more seconds"):
        LocalMember(reserve_after=-1)


# Output files ---------------------------------------------------------------------------------


def test_empty_output_files_are_removed_and_the_rest_kept(log_dir):
    member = LocalMember(log_dir=log_dir)
    quiet = [JobSpec(command=["true"], group="quiet") for _ in range(20)]
    talks = JobSpec(command=["echo", "hi"], group="talks")
    fails = JobSpec(command=["sh", "-c", "echo why >&2; exit 3"], group="fails")
    ids, _ = run_jobs(member, [*quiet, talks, fails])
    run_dir = member.output_dir
    assert os.listdir(log_dir) == [run_dir.name]
    assert sorted(os.listdir(run_dir)) == [f"fails-{ids[21]}.err", f"talks-{ids[20]}.out"]
    assert member.log_paths(ids[0]) == []
    assert member.log_paths(ids[20]) == [f"{run_dir}/talks-{ids[20]}.out"]
    (failed,) = member.log_paths(ids[21])
    assert Path(failed).read_text() == "why\n"


def test_each_run_writes_into_a_directory_of_its_own_and_a_quiet_run_leaves_none(log_dir):
    runs = [LocalMember(log_dir=log_dir) for _ in range(3)]
    said = ["one", "two", None]
    for member, text in zip(runs, said, strict=True):
        ids, _ = run_jobs(member, [JobSpec(command=["echo", text] if text else ["true"])])
        assert ids == [1]  # job ids start at 1 in every run
    first, second, quiet = (member.output_dir for member in runs)
    assert len({first, second, quiet}) == 3
    assert sorted(os.listdir(log_dir)) == sorted([first.name, second.name])
    assert (first / "default-1.out").read_text() == "one\n"
    assert (second / "default-1.out").read_text() == "two\n"


def test_a_named_output_file_that_existed_before_is_kept(tmp_path, log_dir):
    existing = tmp_path / "kept.out"
    existing.touch()
    member = LocalMember(log_dir=log_dir)
    ids, _ = run_jobs(member, [JobSpec(command=["true"], stdout=str(existing))])
    assert existing.exists() and member.log_paths(ids[0]) == [str(existing)]


@pytest.mark.parametrize("mode, files", [("group", ["a.log", "b.log"]), ("run", ["ensemble.log"])])
def test_output_per_group_or_per_run_is_labelled_by_job(tmp_path, log_dir, mode, files):
    member = LocalMember(log_dir=log_dir, output=mode, cores=4)
    talks = "printf 'one\\ntwo'; echo oops >&2"
    own = tmp_path / "own-{{id}}.out"
    specs = [
        JobSpec(command=["sh", "-c", talks], group="a", tasks=2),
        JobSpec(command=["true"], group="a"),
        JobSpec(command=["no-such-command-xyz"], group="b"),
        JobSpec(command=["echo", "mine"], group="b", stdout=str(own)),
    ]
    ids, events = run_jobs(member, specs)
    run_dir = member.output_dir
    assert sorted(os.listdir(run_dir)) == files
    lines = []
    for name in files:
        lines += (run_dir / name).read_text().splitlines()
    first, missing = f"a-{ids[0]}", f"b-{ids[2]}"
    assert sorted(lines) == sorted(
        [f"{first}.out: one", f"{first}.out: one", f"{first}.out: two", f"{first}.out: two",
         f"{first}.err: oops", f"{first}.err: oops",
         f"{missing}.err: ensemble: task 0: start failed: [Errno 2] No such file or directory: "
         "'no-such-command-xyz'"]
    )  # fmt: skip
    assert member.log_paths(ids[0]) == [f"{run_dir}/{files[0]}"]
    assert member.log_paths(ids[1]) == []
    assert member.log_paths(ids[2]) == [f"{run_dir}/{files[-1]}"]
    mine = tmp_path / f"own-{ids[3]}.out"
    assert mine.read_text() == "mine\n" and member.log_paths(ids[3]) == [str(mine)]
    assert outcome_of(events[ids[2]]).exit_code == 127


def test_names_cannot_leave_the_log_directory(tmp_path):
    groups = ["../../x", "/etc/evil", "..", "a/b", "line\nbreak", ".hidden", ""]
    for mode in ("job", "group"):
        log_dir = tmp_path / mode / "deep" / "logs"
        member = LocalMember(log_dir=str(log_dir), output=mode)
        specs = [JobSpec(command=["echo", "hi"], group=group) for group in groups]
        ids, _ = run_jobs(member, specs)
        written = sorted(p.relative_to(tmp_path / mode) for p in (tmp_path / mode).rglob("*"))
        run_dir = member.output_dir
        names = sorted(os.listdir(run_dir))
        run = Path("deep", "logs", run_dir.name)
        assert written == [Path("deep"), Path("deep/logs"), run] + [run / name for name in names]
        if mode == "job":
            safe = ["_.._x", "_etc_evil", "_", "a_b", "line_break", "hidden", "_"]
            assert names == sorted(
                f"{name}-{jobid}.out" for name, jobid in zip(safe, ids, strict=True)
            )
        else:
            assert names == ["_.._x.log", "_.log", "_etc_evil.log", "a_b.log", "hidden.log",
                             "line_break.log"]  # fmt: skip
            assert "\nbreak" not in (run_dir / "line_break.log").read_text()


# Errors end one job, never the member -----------------------------------------------------------


def test_output_that_cannot_be_opened_fails_the_job_and_gives_its_cores_back(tmp_path, log_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    member = LocalMember(cores=1, log_dir=log_dir)
    specs = [
        JobSpec(command=["true"], stdout=str(blocker / "out.txt")),
        JobSpec(command=["echo", "next"]),
    ]
    ids, events = run_jobs(member, specs)
    assert [e.name for e in events[ids[0]]] == [
        "submit", "validate", "depend", "priority", "alloc", "exception", "release", "free",
        "clean",
    ]  # fmt: skip
    record = outcome_of(events[ids[0]])
    assert record.outcome is Outcome.FAILED
    assert record.reason == (
        f"failed: cannot open the job's output file {blocker}/out.txt: {blocker} is not a directory"
    )
    assert member.log_paths(ids[0]) == []
    assert outcome_of(events[ids[1]]).outcome is Outcome.SUCCESS


def test_jobs_whose_tasks_all_fail_to_start_do_not_stop_the_queue(log_dir):
    member = LocalMember(cores=1, log_dir=log_dir)
    specs = [JobSpec(command=["no-such-command-xyz"], tasks=1) for _ in range(5)]
    ids, events = run_jobs(member, [*specs, JobSpec(command=["true"])])
    assert [outcome_of(events[i]).exit_code for i in ids] == [127] * 5 + [0]
    assert all([e.name for e in events[i]] == NORMAL_ORDER for i in ids)


def test_an_error_in_a_callback_ends_that_job_and_no_other(monkeypatch, log_dir):
    real_reap = LocalMember._reap

    def reap_failing_for_job_1(self, job, pid):
        if job.jobid == 1:
            raise RuntimeError("injected")
        real_reap(self, job, pid)

    monkeypatch.setattr(LocalMember, "_reap", reap_failing_for_job_1)
    member = LocalMember(cores=1, log_dir=log_dir)
    started = time.monotonic()
    ids, events = run_jobs(member, [JobSpec(command=["true"]), JobSpec(command=["true"])])
    assert time.monotonic() - started < 10
    assert [e.name for e in events[ids[0]]][-5:] == [
        "start", "exception", "release", "free", "clean"
    ]  # fmt: skip
    failed = outcome_of(events[ids[0]])
    assert (failed.outcome, failed.reason) == (
        Outcome.FAILED,
        "failed: local member error: injected",
    )
    assert failed.exception["severity"] == 0
    assert [e.name for e in events[ids[1]]] == NORMAL_ORDER


def test_a_raising_event_handler_does_not_stop_the_member(log_dir):
    def handler_that_raises(event: JobEvent) -> None:
        if event.name in ("alloc", "finish"):
            raise RuntimeError("a broken controller")

    specs = [JobSpec(command=["true"]) for _ in range(4)]
    ids, events = run_jobs(LocalMember(cores=1, log_dir=log_dir), specs, emit=handler_that_raises)
    assert all([e.name for e in events[i]] == NORMAL_ORDER for i in ids)


def test_finished_jobs_are_forgotten(monkeypatch, log_dir):
    monkeypatch.setattr("ensemble_core.members.local.RECENT_JOBS", 2)
    member = LocalMember(cores=2, log_dir=log_dir)
    specs = [JobSpec(command=["sh", "-c", "exit 1"]) for _ in range(5)]
    specs += [JobSpec(command=["echo", str(n)]) for n in range(5)]
    ids, _ = run_jobs(member, specs)
    assert (member._jobs, member._running, member._scheduler.waiting) == ({}, {}, 0)
    # Bounded to the last 2 jobs that left output (the echo jobs; two run at once, so which
    # two ended last depends on the machine).
    assert len(member._recent) == 2 and set(member._recent) <= set(ids[5:])


# Order and fairness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reserve_after, order", [(60.0, ["narrow", "wide"]), (0.0, ["wide", "narrow"])]
)
def test_a_wide_job_is_overtaken_until_it_has_waited_reserve_after(log_dir, reserve_after, order):
    member = LocalMember(cores=2, log_dir=log_dir, reserve_after=reserve_after)
    specs = [
        JobSpec(command=["sleep", "0.3"], group="busy"),
        JobSpec(command=["true"], group="wide", tasks=2),
        JobSpec(command=["true"], group="narrow"),
    ]
    ids, events = run_jobs(member, specs)
    starts = {
        spec.group: outcome_of(events[i]).start_time for spec, i in zip(specs, ids, strict=True)
    }
    assert sorted(order, key=starts.get) == order


def test_nothing_starts_after_close_and_output_is_closed(log_dir):
    seen: dict[str, object] = {}

    async def close_then_look(member, ids):
        await asyncio.sleep(0.3)
        await member.close()
        await asyncio.sleep(0.3)  # the killed job ends; the waiting one must not start
        seen["second started"] = ids[1] in member._running
        with pytest.raises(MemberError, match="the local member is closed"):
            await member.submit(JobSpec(command=["true"]))
        await member.cancel(ids[1])

    member = LocalMember(cores=1, log_dir=log_dir, output="run", grace_seconds=0.1)
    specs = [JobSpec(command=["sh", "-c", "echo before; sleep 30"]), JobSpec(command=["true"])]
    ids, events = run_jobs(member, specs, during=close_then_look)
    assert seen == {"second started": False}
    assert outcome_of(events[ids[1]]).outcome is Outcome.CANCELLED
    assert "alloc" not in [e.name for e in events[ids[1]]]
    lines = (member.output_dir / "ensemble.log").read_text().splitlines()
    assert lines == [f"default-{ids[0]}.out: before"]


def test_a_failing_memory_watch_stays_inside_the_member(monkeypatch, log_dir):
    def unreadable_proc():
        raise RuntimeError("injected: /proc unreadable")

    monkeypatch.setattr("ensemble_core.members.local.resident_memory", unreadable_proc)
    spec = JobSpec(command=["sleep", "0.3"], memory_mb=100)
    ids, events = run_jobs(LocalMember(log_dir=log_dir), [spec])
    assert outcome_of(events[ids[0]]).outcome is Outcome.SUCCESS


def test_an_output_path_with_a_nul_byte_fails_its_job_only(log_dir):
    specs = [JobSpec(command=["true"], stdout="bad\0name"), JobSpec(command=["true"])]
    ids, events = run_jobs(LocalMember(log_dir=log_dir), specs)
    record = outcome_of(events[ids[0]])
    assert (
        record.reason == "failed: cannot open the job's output file bad\0name: embedded null byte"
    )
    assert outcome_of(events[ids[1]]).outcome is Outcome.SUCCESS


def test_output_directories_made_are_remembered_within_a_bound(tmp_path):
    made: set[Path] = set()
    for n in range(MADE_DIRS + 10):
        files = JobFiles(tmp_path / f"job{n}" / "out", tmp_path / f"job{n}" / "out", made)
        files.open()
        assert files.finish() == []  # empty: removed
    assert len(made) <= MADE_DIRS and (tmp_path / f"job{MADE_DIRS + 9}").is_dir()


def test_tasks_start_alike_whichever_way_they_are_spawned(log_dir, tmp_path):
    """posix_spawnp for most tasks, Popen where a task has its own working directory or PATH:
    each sees /dev/null on stdin, its output files, its directory and finds its program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "only-here"
    script.write_text("#!/bin/sh\necho found\n")
    script.chmod(0o755)
    probe = ["sh", "-c", "cat; pwd; echo err >&2"]
    specs = [
        JobSpec(command=probe, stdout=str(tmp_path / "spawned.out")),
        JobSpec(command=probe, cwd=str(tmp_path), stdout=str(tmp_path / "popen.out")),
        JobSpec(
            command=["only-here"],
            environment={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
            stdout=str(tmp_path / "path.out"),
        ),
        JobSpec(command=["no-such-program-anywhere"]),
    ]
    member = LocalMember(log_dir=log_dir)
    ids, events = run_jobs(member, specs)
    outcomes = [outcome_of(events[i]) for i in ids]
    assert [o.exit_code for o in outcomes] == [0, 0, 0, 127]
    assert (tmp_path / "spawned.out").read_text() == f"{os.getcwd()}\nerr\n"
    assert (tmp_path / "popen.out").read_text() == f"{tmp_path}\nerr\n"
    assert (tmp_path / "path.out").read_text() == "found\n"
