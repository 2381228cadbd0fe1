"""`snakemake --executor ensemble` as users run it: translation, rules, retries, bad input, Ctrl-C.

The workflows run as `snakemake` subprocesses in temporary directories. Memory figures leave room
for the spawned Snakemake inside each job (about 100 MB) and the plugin's default overhead (200 MB)
added to mem_mb.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from snakemake.scheduling.job_scheduler import JobScheduler
from snakemake_interface_common.exceptions import WorkflowError

from ensemble_core.spec import JobSpec
from ensemble_core.testing.processes import processes_with
from snakemake_executor_plugin_ensemble import executor as executor_module
from snakemake_executor_plugin_ensemble.executor import Executor, Wakeup, cancel_scheduler_timers
from snakemake_executor_plugin_ensemble.jobspec import OWN_TMPDIR, RANK_ZERO_ONLY, job_spec
from snakemake_executor_plugin_ensemble.settings import LOG_DIR, ExecutorSettings, member_settings
from snakemake_executor_plugin_ensemble.warm import JOB_MODULE, in_process

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

#: A job that holds `MB` megabytes for two seconds (long enough for the member's memory watch).
ALLOCATE = "python -c 'import time; b = bytes(range(256)) * ({mb} * 4096); time.sleep(2)'"


@dataclass
class FakeJob:
    """What `job_spec` reads of a Snakemake job."""

    name: str
    jobid: Any
    resources: Mapping[str, Any]
    attempt: int = 1
    rules: list[str] = field(default_factory=list)


def run_snakemake(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--executor", "ensemble", "-j", "4", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_snakefile(workdir: Path, text: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(text))


# Translation ----------------------------------------------------------------------------------


def test_job_resources_become_a_jobspec() -> None:
    job = FakeJob(
        "align",
        7,
        {"_cores": 4, "mem_mb": 1000, "disk_mb": 2000, "runtime": 10, "gpu": 1, "tmpdir": "/tmp"},
        attempt=2,
        rules=["align"],
    )
    spec = job_spec(job, "python -m snakemake --target-jobs 'align:'", "/work", "/logs/a.log", 200)
    command = OWN_TMPDIR.format(command="python -m snakemake --target-jobs 'align:'")
    assert spec.command == ["/bin/sh", "-c", command]
    assert (spec.group, spec.name) == ("align", "align.7")
    assert (spec.tasks, spec.cores_per_task, spec.gpus_per_task, spec.nodes) == (1, 4, 1, None)
    assert (spec.memory_mb, spec.disk_mb, spec.walltime) == (1200, 2000, 600)
    assert (spec.cwd, spec.stdout, spec.stderr) == ("/work", "/logs/a.log", None)
    assert spec.attributes == {
        "snakemake_jobid": "7",
        "snakemake_attempt": 2,
        "snakemake_rules": ["align"],
    }


@pytest.mark.parametrize("status", [0, 3])
def test_the_job_wrapper_keeps_the_jobs_exit_status(tmp_path, status) -> None:
    wrapper = OWN_TMPDIR.format(command=f'echo "$TMPDIR"; exit {status}')
    done = subprocess.run(["/bin/sh", "-c", wrapper], capture_output=True, text=True)
    assert done.returncode == status
    assert done.stdout.strip() and not os.path.exists(done.stdout.strip())


def test_a_cancelled_job_loses_its_tmpdir_at_once_however_long_its_snakemake_takes() -> None:
    """The local member sends SIGTERM to the job's group, then SIGKILL 2 s later: the wrapper
    removes the TMPDIR at the SIGTERM, while the job's Snakemake may still be ending (here it
    ignores SIGTERM), not when that Snakemake has ended (after the SIGKILL: never)."""
    slow = "trap '' TERM; echo \"$TMPDIR\"; sleep 30"
    job = subprocess.Popen(
        ["/bin/sh", "-c", OWN_TMPDIR.format(command=slow)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert job.stdout is not None
        tmpdir = job.stdout.readline().strip()
        assert os.path.isdir(tmpdir)
        os.killpg(job.pid, signal.SIGTERM)
        assert job.wait(1) == 143
        assert not os.path.exists(tmpdir)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def test_unset_and_symbolic_resources_are_left_to_the_member() -> None:
    job = FakeJob("plot", 1, {"_cores": 1, "mem_mb": "<TBD>", "runtime": 0, "gpu": 0})
    spec = job_spec(job, "true", "/work", "/logs/p.log", 200)
    assert (spec.memory_mb, spec.walltime, spec.gpus_per_task, spec.disk_mb) == (
        None,
        None,
        0,
        None,
    )


def test_tasks_and_nodes_reserve_an_allocation_that_runs_the_job_once() -> None:
    job = FakeJob(
        "mpi", 2, {"_cores": 1, "nodes": 2, "tasks": 8, "cpus_per_task": 2, "gpu": 4}, rules=["mpi"]
    )
    spec = job_spec(job, "snakemake-job", "/work", "/logs/m.log")
    assert (spec.nodes, spec.tasks, spec.cores_per_task, spec.gpus_per_task) == (2, 8, 2, 1)
    shell = spec.command[2]
    assert shell == RANK_ZERO_ONLY.format(command=OWN_TMPDIR.format(command="snakemake-job"))
    assert shell.startswith('if [ "${FLUX_TASK_RANK:-0}" = 0 ]; then if d="$(mktemp -d')


def test_group_jobs_are_one_jobspec_under_the_group_name() -> None:
    job = FakeJob("foo_a_b", "f95de4a1", {"_cores": 2, "mem_mb": 5}, rules=["b", "a"])
    spec = job_spec(job, "snakemake-group-job", "/work", "/logs/g.log", 200)
    assert (spec.group, spec.cores_per_task, spec.memory_mb) == ("foo_a_b", 2, 205)
    assert spec.attributes["snakemake_rules"] == ["a", "b"]


def test_member_settings_take_only_the_chosen_members_flags() -> None:
    assert member_settings(ExecutorSettings(cores=2, memory_mb=4000)) == {
        "log_dir": LOG_DIR,
        "cores": 2,
        "memory_mb": 4000,
    }
    assert member_settings(ExecutorSettings(member="flux", flux_uri="local:///x")) == {
        "flux_uri": "local:///x"
    }
    with pytest.raises(WorkflowError, match="--ensemble-cores is a setting of the local member"):
        member_settings(ExecutorSettings(member="flux", cores=2))


def test_help_lists_the_ensemble_flags() -> None:
    help_text = subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True).stdout
    for flag in (
        "--ensemble-member {local,flux,kubernetes}",
        "--ensemble-rules FILE_OR_NAME [FILE_OR_NAME ...]",
        "--ensemble-cores N",
        "--ensemble-memory-mb MB",
        "--ensemble-max-nodes N",
        "--ensemble-flux-uri URI",
        "--ensemble-namespace NAME",
    ):
        assert flag in help_text


def test_snakemake_importing_the_plugin_leaves_the_ensemble_core_out() -> None:
    """Every job's Snakemake (and every warm worker) imports each executor plugin to build its
    command line: the plugin then loads the ensemble core only when an executor is made."""
    probe = (
        "import sys, snakemake_executor_plugin_ensemble as plugin; "
        "from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry; "
        "ExecutorPluginRegistry().validate_plugin('ensemble', plugin); "
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"ensemble_core.api", "ensemble_core.ensemble", "ensemble_core.spec", "pydantic"}
    assert not heavy & set(loaded)


def test_shutdown_wakes_the_status_thread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snakemake's shutdown joins the status thread: it must not sleep out its interval."""
    monkeypatch.setattr(executor_module, "STATUS_INTERVAL", 3600.0)
    executor = Executor.__new__(Executor)  # what shutdown and the status thread touch
    executor._wakeup = Wakeup()
    executor._ensemble = None
    executor.lock = threading.Lock()
    executor.wait = True
    executor.active_jobs = []
    executor.workflow = SimpleNamespace(
        executor_plugin=SimpleNamespace(
            common_settings=SimpleNamespace(init_seconds_before_status_checks=0)
        ),
        remote_execution_settings=SimpleNamespace(immediate_submit=True),
    )
    executor.wait_thread = threading.Thread(target=executor._wait_thread, daemon=True)
    executor.wait_thread.start()
    time.sleep(0.2)  # asleep in its first interval by now
    closing = threading.Thread(target=executor.shutdown, daemon=True)
    closing.start()
    closing.join(30)
    assert not closing.is_alive() and not executor.wait_thread.is_alive()


def test_the_schedulers_timers_are_cancelled_and_no_others() -> None:
    """Snakemake's scheduler wakes itself with a non-daemon Timer after each round: the
    interpreter would wait up to a second for it at exit. Other timers run out."""
    scheduler = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    before = set(threading.enumerate())
    JobScheduler._schedule_reevalutation(scheduler, 3600)  # type: ignore[arg-type]
    (reevaluation,) = set(threading.enumerate()) - before
    other = threading.Timer(3600, lambda: None)
    other.start()
    try:
        assert cancel_scheduler_timers() == 1
        reevaluation.join(10)
        assert not reevaluation.is_alive()
        assert other.is_alive()
    finally:
        other.cancel()
        reevaluation.cancel()


def test_a_warm_job_runs_its_snakemake_in_process_with_the_greedy_scheduler() -> None:
    spec = JobSpec(command=["/bin/sh", "-c", "unused"], environment={"KEEP": "1"})
    line = (
        "export A='one two' && /py -m snakemake --target-jobs 'a:i=1' --scheduler 'ilp' "
        "--scheduler-solver-path '/bin' --cores 2"
    )
    warm = in_process(spec, line)
    assert warm.command == [
        *("/py", "-m", JOB_MODULE, "--target-jobs", "a:i=1", "--scheduler", "greedy"),
        *("--scheduler-solver-path", "/bin", "--cores", "2"),
    ]
    assert warm.environment == {"KEEP": "1", "A": "one two"}
    other = in_process(spec, "/py -m snakemake --scheduler 'my-plugin'")
    assert other.command[-2:] == ["--scheduler", "my-plugin"]  # only ILP is replaced
    assert in_process(spec, "cd /x; /py -m snakemake --scheduler ilp") is spec  # a shell's


def test_a_warm_workers_jobs_find_the_platform_described_and_the_tokenizer_compiled() -> None:
    """Every job's Snakemake prints the platform and tokenizes its Snakefile; a worker asks
    once, not a `uname -p` a job, and compiles the tokenizer's expressions once (Python 3.11's:
    from 3.12 on the tokenizer is in C)."""
    probe = (
        "import subprocess, sys, platform, tokenize, snakemake_executor_plugin_ensemble.job\n"
        "def refuse(*args, **kwargs): raise RuntimeError('a process was started')\n"
        "subprocess.Popen = refuse\n"
        "print(platform.platform())\n"
        "assert sys.version_info >= (3, 12) or tokenize._compile.cache_info().currsize > 0"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)


# Workflows ------------------------------------------------------------------------------------


def test_retry_oom_rules_save_a_job_over_its_memory(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(2))

        rule grow:
            output: "out/{{i}}.txt"
            resources: mem_mb=200
            shell: "{ALLOCATE.format(mb=400)} && echo {{wildcards.i}} > {{output}}"
        """,
    )
    result = run_snakemake(tmp_path, "--ensemble-rules", "retry-oom")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["0.txt", "1.txt"]
    assert "Error in rule" not in result.stderr
    summary = result.stderr[result.stderr.index("Ensemble summary:") :]
    header, _, row = summary.splitlines()[1:4]
    counts = dict(zip(header.split(), row.split(), strict=False))
    assert counts["group"] == "grow"
    assert (counts["success"], counts["oom"], counts["resubmitted"]) == ("2", "2", "2")
    assert "attempt 2: memory_mb 800" in summary


def test_snakemake_retries_reevaluate_attempt_based_resources(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: "a.txt"

        rule a:
            output: "a.txt"
            resources: mem_mb=lambda wildcards, attempt: 200 if attempt == 1 else 1000
            shell: "{ALLOCATE.format(mb=400)} && touch {{output}}"
        """,
    )
    result = run_snakemake(tmp_path, "--retries", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.txt").exists()
    # Attempt 1 failed for memory, reported with its reason, log and external id; attempt 2 ran
    # as a new logical job with the re-evaluated mem_mb.
    assert "ensemble: oom: memory use" in result.stderr
    assert "exceeded the limit of 400 MB (local job 1)" in result.stderr
    assert "external_jobid: 1" in result.stderr
    assert f"log: {tmp_path}/{LOG_DIR}/a.log" in result.stderr
    assert "mem_mb=1000" in result.stderr


def test_a_failing_job_reports_its_exit_code(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        """
        rule fail:
            output: "never.txt"
            shell: "echo about to fail >&2; exit 3"
        """,
    )
    for _ in range(2):  # the second run's log is its own, not appended to the first's
        result = run_snakemake(tmp_path)
        assert result.returncode != 0
        assert "ensemble: failed with exit code 1 (local job 1)." in result.stderr
        lines = (tmp_path / LOG_DIR / "fail.log").read_text().splitlines()
        assert lines.count("about to fail") == 1


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--ensemble-member", "slurm"], r"argument --ensemble-member: invalid choice: 'slurm'"),
        (["--ensemble-rules", "bad.yaml"], r"^Error: ensemble executor: bad\.yaml:3: rules\[0\]"),
        (
            ["--ensemble-rules", "no-such-rules"],
            r"^Error: ensemble executor: no-such-rules: no such file, and no shared rule set",
        ),
        (["--ensemble-member", "flux"], r"^Error: ensemble executor: .*(?i:flux)"),
        (
            ["--ensemble-member", "flux", "--ensemble-cores", "2"],
            r"^Error: ensemble executor: --ensemble-cores is a setting of the local member",
        ),
    ],
    ids=["unknown-member", "invalid-rules", "unknown-rules", "flux-without-flux", "wrong-flag"],
)
def test_bad_input_is_one_clear_line_before_any_job(
    tmp_path: Path, args: list[str], pattern: str
) -> None:
    if args == ["--ensemble-member", "flux"] and shutil.which("flux"):
        pytest.skip("Flux is installed here: the flux member would start")
    write_snakefile(
        tmp_path,
        """
        rule a:
            output: "a.txt"
            shell: "touch {output}"
        """,
    )
    (tmp_path / "bad.yaml").write_text(
        "rules:\n  - trigger: job-oom\n    action: {name: resubmitt}\n"
    )
    result = run_snakemake(tmp_path, *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if re.search(pattern, line)]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert 'File "' not in result.stderr
    assert "Submitted" not in result.stderr
    assert not (tmp_path / "a.txt").exists()


def test_sigint_cancels_every_job_and_leaves_no_process(tmp_path: Path) -> None:
    marker = f"{time.time_ns() % 10**6 + 10**6}.5"  # `sleep 1234567.5`: unique to this test
    write_snakefile(
        tmp_path,
        f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(2))

        rule wait:
            output: "out/{{i}}.txt"
            shell: "sleep {marker} && touch {{output}}"
        """,
    )
    tmpdir = tmp_path / "tmp"  # the jobs' Snakemake makes its temporary directory in it
    tmpdir.mkdir()
    snakemake = subprocess.Popen(
        [SNAKEMAKE, "--executor", "ensemble", "-j", "4"],
        cwd=tmp_path,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT; make sure Snakemake gets the default handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while sum(c.startswith("sleep ") for c in processes_with(marker)) < 2:
            assert time.monotonic() < deadline, "the jobs never started"
            assert snakemake.poll() is None, snakemake.stderr.read() if snakemake.stderr else ""
            time.sleep(0.1)
        snakemake.send_signal(signal.SIGINT)
        _, stderr = snakemake.communicate(timeout=30)
    finally:
        if snakemake.poll() is None:
            snakemake.kill()
    assert snakemake.returncode != 0
    assert "Terminating processes on user request" in stderr
    assert processes_with(marker) == []
    assert processes_with(str(tmp_path)) == []
    assert "cancelled" in stderr[stderr.index("Ensemble summary:") :]
    assert list(tmpdir.iterdir()) == [], "temporary directories were left behind"


def test_a_failed_group_job_tells_its_reason(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        """
        rule all:
            input: "b.txt"
        rule a:
            output: "a.txt"
            group: "pair"
            shell: "touch {output}"
        rule b:
            input: "a.txt"
            output: "b.txt"
            group: "pair"
            shell: "exit 5"
        """,
    )
    result = run_snakemake(tmp_path)
    assert result.returncode != 0
    # Snakemake's GroupJob.log_error drops the message (its rules show `message: None`): the
    # plugin logs it itself. The group's spawned Snakemake exits 1 when a rule inside fails.
    assert re.search(
        r"Error in group job \S+: ensemble: failed with exit code 1 \(local job", (result.stderr)
    )


def test_more_threads_than_the_local_member_has_run_scaled_down(tmp_path: Path) -> None:
    write_snakefile(
        tmp_path,
        """
        rule all:
            threads: 64
            output: "threads.txt"
            shell: "echo {threads} > {output}"
        """,
    )
    result = run_snakemake(tmp_path, "--ensemble-cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "threads.txt").read_text().strip() == "2"
    assert "asks for 64 threads; the local member's node has 2 cores: running it with 2" in (
        result.stderr
    )
