"""A Parsl script killed with SIGTERM or interrupted with SIGINT leaves no worker and no task file.

The script runs as users run theirs, in a process of its own; the workers are found by the
script's directory in their command lines. (`ensemble run`'s signals are tested in test_cli.py,
Snakemake's in test_snakemake_plugin.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ensemble_core.testing.processes import processes_in, processes_with, threads_of
from ensemble_core.testing.waiting import eventually

SCRIPT = """
    import parsl
    from parsl import python_app
    from parsl.config import Config
    from parsl_ensemble.executor import EnsembleExecutor

    @python_app
    def nap(i):
        import time
        time.sleep(300)
        return i

    executor = EnsembleExecutor(member_settings={"cores": 2, "log_dir": "logs"})
    parsl.load(Config(executors=[executor], run_dir="runinfo"))
    futures = [nap(i) for i in range(4)]
    print([future.result() for future in futures])
"""


@pytest.mark.parametrize("warm", [False, True], ids=["job-per-task", "warm"])
@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_parsl_script_ended_by_a_signal_leaves_no_worker_and_no_task_file(
    tmp_path: Path, signum: int, status: int, warm: bool
) -> None:
    """Warm: two warm workers and the controller in a process of its own (the default)."""
    returncode, stderr = run_and_signal(tmp_path, warm, lambda script: script.send_signal(signum))
    assert returncode == status, stderr


def test_sigterm_taken_by_another_thread_of_the_script_ends_it_too(tmp_path: Path) -> None:
    """The kernel hands a process's signal to any of its threads that does not block it (one
    returning from fork or changing its signal mask may take it first), while Python runs the
    handler only on the main thread, which may be waiting for a Future: the executor then
    delivers it to the main thread itself. kill() with a thread's id offers it to that thread."""

    def to_another_thread(script: subprocess.Popen[str]) -> None:
        threads = threads_of(script.pid)
        os.kill(threads[-1], signal.SIGTERM)

    returncode, stderr = run_and_signal(tmp_path, False, to_another_thread)
    assert returncode == 143, stderr


def run_and_signal(
    tmp_path: Path, warm: bool, send: Callable[[subprocess.Popen[str]], None]
) -> tuple[int, str]:
    """Runs SCRIPT until its workers run, signals it with `send`, checks that nothing is left
    behind once it has ended, and returns its exit status and standard error."""
    script_text = textwrap.dedent(SCRIPT)
    if warm:
        script_text = script_text.replace("EnsembleExecutor(", "EnsembleExecutor(workers=2, ")
    (tmp_path / "script.py").write_text(script_text)
    left = working_in if warm else workers
    script = subprocess.Popen(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while len(left(tmp_path)) < (5 if warm else 2):
            assert time.monotonic() < deadline, "the workers never started"
            assert script.poll() is None, script.communicate()[1]
            time.sleep(0.1)
        assert list(tmp_path.glob("runinfo/*/ensemble/task-*.in"))
        send(script)
        _, stderr = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
    assert eventually(lambda: left(tmp_path) == [], 10), left(tmp_path)
    assert list(tmp_path.glob("runinfo/*/ensemble/task-*")) == []
    return script.returncode, stderr


def workers(directory: Path) -> list[str]:
    """Command lines of the Parsl workers whose task files are under `directory`."""
    return [c for c in processes_with(str(directory)) if "parsl_ensemble.worker" in c]


def working_in(directory: Path) -> list[str]:
    """Command lines of the processes working in `directory` but the script: with warm workers,
    the controller apart, the workers, their guards and task processes."""
    return [command for command in processes_in(directory) if "script.py" not in command]
