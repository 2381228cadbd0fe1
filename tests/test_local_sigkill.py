"""SIGKILL through each front door on the local member: the jobs die with the controller.

`ensemble run`, a Snakemake workflow and a Parsl script run as users run them, each in a process
of its own, and are killed with SIGKILL while their jobs run: no code of theirs runs after that,
so only the member's reaper (local_lifeline) can end the jobs. Afterwards no job's process is
left: not its command, not the shell or the inner Snakemake around it, not a Parsl worker. A run
of `ensemble run` killed so is then finished by the same command with the same `--state`: every
job's outcome right, none counted or run twice, no output file appended to by both runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from test_local_lifeline import GONE_SECONDS, processes_with, started_as, until
from test_signals import SCRIPT as PARSL_SCRIPT
from test_signals import workers

ENSEMBLE = [sys.executable, "-m", "ensemble_core.cli"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

ENSEMBLE_FILE = """
jobs:
  - {{name: quick, command: "sh -c 'echo ran >> quick-runs'", count: 3}}
  - name: long
    command: bash -c 'echo started; (exec -a {tag} sleep 3) && echo ran >> long-runs'
    count: 2
  - {{name: after, command: "sh -c 'echo ran >> after-runs'"}}
rules:
  - {{trigger: start, action: {{name: submit, label: quick}}}}
  - {{trigger: start, action: {{name: submit, label: long}}}}
  - trigger: metric
    name: count.quick.success
    when: 3
    action: {{name: submit, label: after}}
"""


def test_ensemble_run_killed_leaves_no_job_and_the_same_command_finishes_the_run(tmp_path):
    tag = unique_tag("ensemble-run")
    (tmp_path / "e.yaml").write_text(ENSEMBLE_FILE.format(tag=tag))
    command = [*ENSEMBLE, "run", "e.yaml", "--state", "state", "--cores", "4", "--json"]
    killed = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        until(lambda: len(started_as(tag)) == 2, "the long jobs never started", killed)
        until(lambda: lines(tmp_path / "after-runs") == 1, "the metric rule never fired", killed)
        time.sleep(0.5)  # the journal has written the quick jobs' ends (it writes every 0.2 s)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    until(
        lambda: processes_with(tag) == [],
        "processes of the jobs outlived `ensemble run`",
        timeout=GONE_SECONDS,
    )

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    groups = json.loads(again.stdout)["groups"]
    assert {name: (g["submitted"], g["success"]) for name, g in groups.items()} == {
        "quick": (3, 3),
        "long": (2, 2),
        "after": (1, 1),
    }
    # The quick jobs and the rule's job ran once in all; the long ones ended once, in the
    # second run (the first run's were killed with it and started again).
    runs = [lines(tmp_path / name) for name in ("quick-runs", "after-runs", "long-runs")]
    assert runs == [3, 1, 2]
    run_dirs = sorted((tmp_path / "ensemble-logs").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:  # each long job's file holds its own run's line, once
        outputs = sorted(run_dir.glob("long-*.out"))
        assert len(outputs) == 2
        assert {path.read_text() for path in outputs} == {"started\n"}


def test_snakemake_killed_leaves_no_job_command_shell_or_inner_snakemake(tmp_path):
    tag = f"{time.time_ns() % 10**6 + 10**6}.25"  # `sleep 1234567.25`: unique to this test
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            rule all:
                input: expand("out/{{i}}.txt", i=range(2))

            rule wait:
                output: "out/{{i}}.txt"
                shell: "sleep {tag} && touch {{output}}"
            """
        )
    )
    scratch = tmp_path / "scratch"  # where each job's `mktemp -d` makes its TMPDIR
    scratch.mkdir()
    snakemake = subprocess.Popen(
        [SNAKEMAKE, "--executor", "ensemble", "-j", "4"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    try:
        until(lambda: len(started_as(f"sleep {tag}")) == 2, "the jobs never started", snakemake)
        assert len(processes_with(str(tmp_path))) >= 2  # each job's shell and inner Snakemake
        assert len(list(scratch.iterdir())) >= 2
    finally:
        snakemake.send_signal(signal.SIGKILL)
        snakemake.wait()
    until(
        lambda: processes_with(tag) == [], "job commands outlived Snakemake", timeout=GONE_SECONDS
    )
    until(
        lambda: processes_with(str(tmp_path)) == [],
        "shells or inner Snakemakes were left",
        timeout=GONE_SECONDS,
    )
    leftover = {path.name for path in scratch.iterdir()}
    assert not {name for name in leftover if name.startswith("tmp.")}, leftover  # TMPDIRs went


def test_a_parsl_script_killed_leaves_no_worker(tmp_path):
    (tmp_path / "script.py").write_text(textwrap.dedent(PARSL_SCRIPT))  # 4 apps on 2 cores
    script = subprocess.Popen(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until(lambda: len(workers(tmp_path)) == 2, "the workers never started", script)
    finally:
        script.send_signal(signal.SIGKILL)
        script.wait()
    until(
        lambda: workers(tmp_path) == [], "Parsl workers outlived the script", timeout=GONE_SECONDS
    )


def unique_tag(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
