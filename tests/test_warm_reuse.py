"""Reused task processes on real warm workers: the in-process tasks of a module named in `reuse`
(here `timeit`, `python -P -m timeit -n 1 -r 1 STATEMENT` runs the statement once) run one after
another in one process, each with its own environment, directory and output, and a task that
ends other than cleanly takes its process with it, so the next runs in a fresh fork."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from test_warm_member import RETRY, gone, in_process, wait_for, warm_ensemble

from ensemble_core.ensemble import Ensemble
from ensemble_core.events import Outcome
from ensemble_core.jobs import JobHandle
from ensemble_core.spec import JobSpec


def one_worker(
    log_dir: str, rules: str = "", **settings: object
) -> contextlib.AbstractContextManager[Ensemble]:
    """One warm worker of one core that reuses processes for `timeit` tasks."""
    one = {"workers": 1, "reuse": ["timeit"], "cores": 2}
    return warm_ensemble(log_dir, rules, **{**one, **settings})


def probe(path: Path, then: str = "") -> list[str]:
    """A task that writes what it sees (its process, id, directory, TMPDIR and what is in it,
    a variable an earlier task may have set) to `path`, leaves a file in its TMPDIR, then does
    `then`."""
    return in_process(
        "import json, os, sys; json.dump({'pid': os.getpid(), "
        "'id': os.environ['ENSEMBLE_JOB_ID'], 'cwd': os.getcwd(), "
        "'tmp': os.environ['TMPDIR'], 'in_tmp': os.listdir(os.environ['TMPDIR']), "
        "'left': os.environ.get('LEFT'), 'path': sys.path[:1]}, "
        f"open({str(path)!r}, 'w')); os.environ['LEFT'] = 'x'; sys.path.insert(0, 'gone'); "
        "open(os.path.join(os.environ['TMPDIR'], 'litter'), 'w'); "
        f"print('out of', os.environ['ENSEMBLE_JOB_ID']); {then}"
    )


def run_all(ensemble: Ensemble, specs: list[JobSpec]) -> list[JobHandle]:
    handles = [ensemble.submit(spec) for spec in specs]
    for handle in handles:
        handle.wait(60)
    return handles


def outcomes(handles: list[JobHandle]) -> list[Outcome | None]:
    return [handle.outcome for handle in handles]


def seen(path: Path) -> dict[str, object]:
    return json.loads(path.read_text())


def test_one_process_serves_several_tasks_each_set_up_as_its_own(tmp_path, log_dir):
    paths = [tmp_path / f"seen{i}.json" for i in range(4)]
    cwds = [tmp_path / f"cwd{i}" for i in range(4)]
    for cwd in cwds:
        cwd.mkdir()
    specs = [
        JobSpec(command=probe(path), cwd=str(cwd), stdout=str(tmp_path / f"out{i}"))
        for i, (path, cwd) in enumerate(zip(paths, cwds, strict=True))
    ]
    with one_worker(log_dir) as ensemble:
        handles = run_all(ensemble, specs)
    assert outcomes(handles) == [Outcome.SUCCESS] * 4
    facts = [seen(path) for path in paths]
    assert len({fact["pid"] for fact in facts}) == 1  # one process ran them all
    assert [fact["cwd"] for fact in facts] == [str(cwd) for cwd in cwds]
    assert [fact["left"] for fact in facts] == [None] * 4  # the environment was put back
    assert all(fact["path"] == facts[0]["path"] != ["gone"] for fact in facts)  # sys.path too
    # The process's TMPDIR, emptied for each task, removed with the process.
    assert [fact["in_tmp"] for fact in facts] == [[]] * 4
    assert not any(os.path.exists(fact["tmp"]) for fact in facts)
    assert [fact["id"] for fact in facts] == [handle.member_id for handle in handles]
    for i, fact in enumerate(facts):
        assert (tmp_path / f"out{i}").read_text().startswith(f"out of {fact['id']}\n1 loop")
    assert not gone(facts[0]["pid"], within=0.1)  # it waits for the next task


@pytest.mark.parametrize(
    "leaves",
    [
        "import threading, time; threading.Thread(target=time.sleep, args=(0.2,)).start()",
        "import subprocess; subprocess.Popen(['sleep', '30'])",
        "import atexit; atexit.register(print, 'at exit')",
        "import signal; signal.signal(signal.SIGUSR1, signal.SIG_IGN)",
        "raise SystemExit(3)",
    ],
    ids=["thread", "process", "atexit", "signal", "failed"],
)
def test_a_task_that_leaves_state_ends_its_process_and_the_next_gets_a_fresh_one(
    tmp_path, log_dir, leaves
):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    out = tmp_path / "first.out"
    with one_worker(log_dir) as ensemble:
        handles = run_all(
            ensemble,
            [
                JobSpec(command=probe(first, leaves), stdout=str(out)),
                JobSpec(command=probe(second)),
            ],
        )
    expected = Outcome.FAILED if leaves.startswith("raise") else Outcome.SUCCESS
    assert outcomes(handles) == [expected, Outcome.SUCCESS]
    assert seen(first)["pid"] != seen(second)["pid"]
    assert gone(seen(first)["pid"])  # and what it left (the sleep) ended with it
    if "atexit" in leaves:
        assert out.read_text().endswith("at exit\n")  # run, as at the interpreter's exit


def test_oom_timeout_and_cancel_in_a_reused_process(tmp_path, log_dir):
    hog = "import time; x = b'x' * (120 * 2**20); time.sleep(5)"
    pid_file = tmp_path / "pid"
    paths = [tmp_path / f"seen{i}.json" for i in range(4)]
    with one_worker(log_dir) as ensemble:
        warm = ensemble.submit(JobSpec(command=probe(paths[0])))
        assert warm.wait(60) is Outcome.SUCCESS
        oom = ensemble.submit(JobSpec(command=probe(paths[1], hog), memory_mb=60))
        assert oom.wait(60) is Outcome.OOM, oom.reason
        sleeps = probe(paths[2], "import time; time.sleep(30)")
        slow = ensemble.submit(JobSpec(command=sleeps, walltime=0.5))
        assert slow.wait(60) is Outcome.TIMEOUT
        says_pid = f"import os, time; open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}}\\n')"
        cancelled = ensemble.submit(JobSpec(command=in_process(f"{says_pid}; time.sleep(30)")))
        pid = int(wait_for(pid_file))
        ensemble.cancel(cancelled)
        assert cancelled.wait(30) is Outcome.CANCELLED
        after = ensemble.submit(JobSpec(command=probe(paths[3])))
        assert after.wait(60) is Outcome.SUCCESS
    pids = [seen(path)["pid"] for path in paths]
    assert pids[0] == pids[1]  # the oom ran in the reused process...
    assert len({*pids, pid}) == 4  # ...which went with it; so did the next two
    assert all(gone(p) for p in [*pids[:3], pid])


def test_memory_counts_from_what_the_reused_process_held_at_the_task_start(tmp_path, log_dir):
    holds = "import sys; sys.held = b'x' * (40 * 2**20)"  # kept in the process, under 64 MB
    paths = [tmp_path / f"seen{i}.json" for i in range(2)]
    with one_worker(log_dir, RETRY) as ensemble:
        handles = run_all(
            ensemble,
            [
                JobSpec(command=probe(paths[0], holds)),
                JobSpec(command=probe(paths[1], "import time; time.sleep(0.5)"), memory_mb=30),
            ],
        )
    assert outcomes(handles) == [Outcome.SUCCESS, Outcome.SUCCESS]
    assert seen(paths[0])["pid"] == seen(paths[1])["pid"]
    # The 40 MB the process held from before did not count against the 30 MB (no oom).
    assert [len(handle.attempts) for handle in handles] == [1, 1]


def test_without_reuse_every_task_is_forked(tmp_path, log_dir):
    paths = [tmp_path / f"seen{i}.json" for i in range(3)]
    with one_worker(log_dir, reuse=None) as ensemble:
        handles = run_all(ensemble, [JobSpec(command=probe(path)) for path in paths])
    assert outcomes(handles) == [Outcome.SUCCESS] * 3
    assert len({seen(path)["pid"] for path in paths}) == 3


def test_a_killed_worker_ends_the_task_in_its_reused_process(tmp_path, log_dir):
    mark, first = tmp_path / "mark", tmp_path / "first.json"
    writes = f"open({str(mark)!r}, 'w').write(f'{{os.getpid()}} {{os.getppid()}}\\n')"
    with one_worker(log_dir) as ensemble:
        assert run_all(ensemble, [JobSpec(command=probe(first))])[0].outcome is Outcome.SUCCESS
        handle = ensemble.submit(
            JobSpec(command=in_process(f"import os, time; {writes}; time.sleep(30)"))
        )
        task_pid, worker_pid = map(int, wait_for(mark).split())
        assert task_pid == seen(first)["pid"]  # the reused process
        os.kill(worker_pid, signal.SIGKILL)
        assert gone(task_pid), "the worker's guard did not end its reused process"
        assert handle.wait(60) is Outcome.NODE_FAILURE
    assert "ended while the task ran" in handle.reason


def test_a_task_too_large_to_hand_over_is_forked_and_one_that_cannot_start_fails(tmp_path, log_dir):
    paths = [tmp_path / f"seen{i}.json" for i in range(4)]
    err = tmp_path / "missing.err"
    big = {"BIG": "x" * 100_000}  # more than a reused process takes at once
    specs = [
        JobSpec(command=probe(paths[0])),
        JobSpec(command=probe(paths[1]), environment=big),
        JobSpec(command=probe(paths[2])),
        JobSpec(command=probe(paths[3]), cwd=str(tmp_path / "no-such-dir"), stderr=str(err)),
    ]
    with one_worker(log_dir) as ensemble:
        handles = run_all(ensemble, specs)
    assert outcomes(handles) == [Outcome.SUCCESS] * 3 + [Outcome.FAILED]
    pids = [seen(path)["pid"] for path in paths[:3]]
    assert pids[0] == pids[2] != pids[1]  # the large one was forked; the process served on
    assert handles[3].attempts[0].record.exit_code == 127 and not paths[3].exists()
    assert "start failed" in err.read_text()


def offers(data: str, path: Path, then: str = "") -> list[str]:
    """A task that offers the bytes `data` evaluates to as its result (`warm_result`), writing
    them to `path` itself where the offer is not taken, then does `then`."""
    return in_process(
        f"import sys; data = {data}; write = lambda: open({str(path)!r}, 'wb').write(data); "
        "warm = sys.modules.get('ensemble_core.members.warm_result'); "
        f"(warm is not None and warm.offer(data, write)) or write(); {then}"
    )


def test_a_result_goes_back_with_the_finish_and_to_its_file_where_it_cannot(tmp_path, log_dir):
    from ensemble_core.members.warm_result import LIMIT

    files = [tmp_path / f"result{i}" for i in range(4)]
    thread = "import threading, time; threading.Thread(target=time.sleep, args=(0.2,)).start()"
    specs = [
        JobSpec(command=offers("b'small'", files[0])),
        JobSpec(command=offers(f"b'x' * {LIMIT + 1}", files[1])),  # too large to carry
        JobSpec(command=offers("b'kept'", files[2], then=thread)),  # the process ends after all
        JobSpec(command=offers("b'last'", files[3])),
    ]
    with one_worker(log_dir) as ensemble:
        handles = run_all(ensemble, specs)
    assert outcomes(handles) == [Outcome.SUCCESS] * 4
    carried = [handle.attempts[-1].record.result for handle in handles]
    assert carried == [b"small", None, None, b"last"]
    assert [path.exists() for path in files] == [False, True, True, False]
    assert files[1].read_bytes() == b"x" * (LIMIT + 1)
    assert files[2].read_bytes() == b"kept"


def test_a_forked_task_writes_its_result_itself(tmp_path, log_dir):
    path = tmp_path / "result"
    with one_worker(log_dir, reuse=None) as ensemble:
        (handle,) = run_all(ensemble, [JobSpec(command=offers("b'forked'", path))])
    assert handle.outcome is Outcome.SUCCESS and handle.attempts[-1].record.result is None
    assert path.read_bytes() == b"forked"


def test_the_modules_reused_tasks_import_are_imported_by_their_worker(tmp_path, log_dir):
    """Learned by a task that ended cleanly (its process says so in its report) and by one that
    ended its process (the worker looks for what it wrote), not by one that imported nothing."""
    names = ("wave", "colorsys", "netrc")
    (tmp_path / "sees.py").write_text(
        f"import sys\nseen = [name in sys.modules for name in {names!r}]\n"
        "open('seen', 'w').write(repr(seen))\n"
    )
    reused = [
        JobSpec(command=in_process("import wave")),
        JobSpec(command=in_process("import colorsys; raise SystemExit(3)")),
        JobSpec(command=in_process("pass")),
    ]
    forked = JobSpec(command=[sys.executable, "-m", "sees"], cwd=str(tmp_path))  # not in reuse
    with one_worker(log_dir) as ensemble:
        expected = [Outcome.SUCCESS, Outcome.FAILED, Outcome.SUCCESS]
        assert outcomes(run_all(ensemble, reused)) == expected
        assert outcomes(run_all(ensemble, [forked])) == [Outcome.SUCCESS]
    # forked from a worker that has what its tasks imported
    assert (tmp_path / "seen").read_text() == "[True, True, False]"


def test_a_result_the_socket_cannot_take_in_one_message_goes_to_its_file(tmp_path, monkeypatch):
    """A reused process driven directly, its socket's buffer made small (as a system whose
    buffers are smaller than `warm_result.LIMIT` has them): a result that still fits comes
    back with the report, one that does not is written to the task's file instead."""
    import select
    import socket

    from ensemble_core.members.warm_child import Plan, main_code
    from ensemble_core.members.warm_guard import Guard
    from ensemble_core.members.warm_runner import Runner

    socketpair = socket.socketpair

    def small_buffers(*args: object) -> tuple[socket.socket, socket.socket]:
        pair = socketpair(*args)
        for end in pair:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return pair

    monkeypatch.setattr(socket, "socketpair", small_buffers)
    for name in ("stdout", "stderr"):  # real streams, as a worker has (not pytest's capture)
        monkeypatch.setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115
    guard = Guard()
    (tmp_path / "tmp").mkdir()
    runner = Runner(guard, (), tmp_path / "tmp")
    try:
        reports = []
        for size in (1000, 50_000):  # the second within LIMIT, not the buffer
            statement = offers(f"b'y' * {size}", tmp_path / f"result{size}")[-1]
            plan = Plan("timeit", ["-n", "1", "-r", "1", statement], frozenset({"-P"}))
            plan.main = main_code("timeit")
            out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            fds = [os.open(os.devnull, os.O_RDONLY), out, out]
            assert runner.hand(f"t{size}", plan, {}, None, fds, tmp_path / "learned")
            for fd in set(fds):
                os.close(fd)
            assert select.select([runner.channel], [], [], 30)[0], "no report"
            reports.append(runner.report())
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        os.waitpid(runner.pid, 0)
        runner.close()
        os.close(guard.fd)
    assert reports == [b"\0" + b"y" * 1000, b"\0"]
    assert not (tmp_path / "result1000").exists()
    assert (tmp_path / "result50000").read_bytes() == b"y" * 50_000
