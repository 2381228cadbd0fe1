"""The three front doors with warm workers on the local member: `ensemble run` with
`member: {workers: N}`, `EnsembleExecutor(workers=N)` and `snakemake --ensemble-workers N`.
Each shows its tasks ran forked in a worker and that retry-oom saves a warm task as it saves a
job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import parsl
import pytest
from parsl import bash_app, python_app
from parsl.app.errors import BashExitFailure
from parsl.config import Config
from test_cli import ensemble
from test_snakemake_plugin import ALLOCATE, run_snakemake, write_snakefile

from ensemble_core.process_ensemble import ProcessEnsemble
from parsl_ensemble import EnsembleExecutor, inputs
from parsl_ensemble.errors import EnsembleTaskError
from snakemake_executor_plugin_ensemble.settings import WARM_PRELOAD

WARM_WORKER = "ensemble_core.members.warm_worker"


def test_ensemble_run_with_workers(tmp_path):
    spec = tmp_path / "warm.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            member: {{workers: 2, log_dir: {tmp_path / "logs"}}}
            jobs:
              - {{name: probe, command: "sh -c 'cat /proc/$PPID/cmdline > probe-$ENSEMBLE_JOB_ID'",
                 count: 3}}
              - name: hungry
                command: [python3, -c, "import time; b = b'x' * (150 << 20); time.sleep(1)"]
                memory: 100
            rules:
              - trigger: start
                action: {{name: submit, label: probe}}
              - trigger: start
                action: {{name: submit, label: hungry}}
              - trigger: job-oom
                action: {{name: resubmit, resources: {{mem_mb: x2}}}}
            """
        )
    )
    result = ensemble("run", str(spec), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"]["probe"]["success"] == 3
    assert (report["groups"]["hungry"]["oom"], report["groups"]["hungry"]["success"]) == (1, 1)
    assert report["member"]["member"] == "local" and report["member"]["target_workers"] == 2
    probes = sorted(tmp_path.glob("probe-warm_*"))
    assert len(probes) == 3  # each ran in a worker: its shell's parent is the forked child
    assert all(WARM_WORKER in path.read_text() for path in probes)


@python_app
def where() -> str:
    return open("/proc/self/cmdline").read()


@python_app
def use_memory(megabytes, parsl_resource_specification=None):
    import time

    block = b"x" * (megabytes * 2**20)
    time.sleep(0.5)
    return len(block) // 2**20


@python_app
def fail(message):
    raise KeyError(message)


@bash_app
def exit_with(code):
    return f"exit {code}"


def test_parsl_executor_with_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executor = EnsembleExecutor(
        workers=2, rules=["retry-oom"], member_settings={"log_dir": str(tmp_path / "logs")}
    )
    config = Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))
    with parsl.load(config):
        # workers: the controller runs apart (process_ensemble), the tasks in warm workers
        assert isinstance(executor.ensemble, ProcessEnsemble)
        assert WARM_WORKER in where().result()
        assert use_memory(150, parsl_resource_specification={"memory": 100}).result() == 150
        with pytest.raises(KeyError, match="nope"):
            fail("nope").result()
        with pytest.raises(BashExitFailure) as failure:
            exit_with(3).result()
        assert failure.value.exitcode == 3
        counts = executor.ensemble.snapshot()["groups"]["use_memory"]
    assert (counts["oom"], counts["success"], counts["resubmitted"]) == (1, 1, 1)


@python_app
def pid_and_sum(a, b):
    return os.getpid(), a + b


def test_parsl_apps_share_a_reused_process_and_files_of_calls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(inputs, "CALLS_PER_FILE", 3)
    work = tmp_path / "work"
    executor = EnsembleExecutor(
        workers=1, working_dir=str(work), member_settings={"log_dir": str(tmp_path / "logs")}
    )
    with parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))):
        results = [pid_and_sum(i, 10 * i).result() for i in range(8)]
        # Files whose calls all resolved are gone: only the one that takes calls is left.
        left = list(work.glob("task-calls-*.in"))
    assert [total for _, total in results] == [11 * i for i in range(8)]
    assert len({pid for pid, _ in results}) == 1  # one reused process ran every app
    assert len(left) == 1
    assert not list(work.iterdir())  # nothing left after the executor's shutdown


@python_app
def large() -> bytes:
    return b"x" * 300_000  # more than goes back with a task's end: written to its file


@python_app
def unreadable() -> object:
    class Unreadable:
        def __reduce__(self):  # pickles; unpickling calls int("not a number")
            return (int, ("not a number",))

    return Unreadable()


@python_app
def leaves_a_thread() -> str:
    import threading
    import time

    threading.Thread(target=time.sleep, args=(0.2,)).start()  # its process ends after it
    return "kept"


def test_parsl_results_with_workers_small_large_unreadable_and_in_an_ending_process(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    executor = EnsembleExecutor(
        workers=1, working_dir=str(work), member_settings={"log_dir": str(tmp_path / "logs")}
    )
    with parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))):
        assert pid_and_sum(1, 2).result()[1] == 3
        assert large().result() == b"x" * 300_000
        with pytest.raises(ValueError, match="not a number") as raised:
            unreadable().result()
        assert any("while reading the result of task" in note for note in raised.value.__notes__)
        assert leaves_a_thread().result() == "kept"
        assert pid_and_sum(3, 4).result()[1] == 7
    assert not list(work.iterdir())  # no result file left


@python_app
def kills_its_worker() -> int:
    import os
    import signal

    os.kill(os.getppid(), signal.SIGKILL)  # the worker that forked this reused process
    return 42  # its result is on its way when the worker is gone


def test_a_worker_killed_while_an_app_returns_fails_the_app_as_node_failure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    executor = EnsembleExecutor(
        workers=1, working_dir=str(work), member_settings={"log_dir": str(tmp_path / "logs")}
    )
    with parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))):
        with pytest.raises(EnsembleTaskError) as lost:
            kills_its_worker().result(timeout=60)
        assert pid_and_sum(2, 3).result(timeout=60)[1] == 5  # a new worker serves the next
    assert lost.value.outcome == "node-failure"
    assert "ended while the task ran" in lost.value.reason
    assert not list(work.iterdir())


def test_snakemake_with_workers(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(3)), "big.txt"

        rule small:
            output: "out/{{i}}.txt"
            shell: "echo {{wildcards.i}} > {{output}}"

        rule big:
            output: "big.txt"
            resources: mem_mb=200
            shell: "{ALLOCATE.format(mb=400)} && touch {{output}}"
        """,
    )
    result = run_snakemake(tmp_path, "--ensemble-workers", "2", "--ensemble-rules", "retry-oom")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["0.txt", "1.txt", "2.txt"]
    summary = result.stderr[result.stderr.index("Ensemble summary:") :]
    assert "attempt 2: memory_mb 800" in summary
    assert "as ensemble job" in result.stderr
    # The jobs' Snakemake ran in-process in forked workers (not `python -m snakemake`).
    logs = list((tmp_path / ".snakemake" / "ensemble_logs").rglob("*.log"))
    assert logs and all(
        "snakemake_executor_plugin_ensemble/job.py" in log.read_text() for log in logs
    )


def test_the_snakemake_preload_imports() -> None:
    """What warm workers import for Snakemake jobs is there to import (a worker skips a name it
    cannot import, and its jobs would pay for it again)."""
    probe = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    subprocess.run([sys.executable, "-c", probe, *WARM_PRELOAD], check=True)
