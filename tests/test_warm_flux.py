"""Warm workers as jobs of a real Flux instance (`flux start --test-size=2`), and the three front
doors in warm mode on it. Run with `flux` on PATH and flux-python importable; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import parsl
import pytest
from parsl.config import Config
from test_cli import ensemble
from test_flux_integration import flux_instance
from test_warm_front_doors import WARM_WORKER, exit_with, use_memory, where
from test_warm_member import in_process

from ensemble_core.api import open_ensemble
from ensemble_core.events import Outcome
from ensemble_core.spec import JobSpec
from parsl_ensemble import EnsembleExecutor

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


@pytest.fixture(scope="module")
def flux_uri() -> Iterator[str]:
    with flux_instance("--test-size=2") as instance:
        yield instance.uri


def test_tasks_on_workers_that_are_flux_jobs(flux_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hog = "import time; x = b'x' * (150 * 2**20); time.sleep(0.5)"
    warm = open_ensemble("flux", ["retry-oom"], {"workers": 2, "flux_uri": flux_uri})
    try:
        quick = [warm.submit(JobSpec(command=["true"])) for _ in range(20)]
        hungry = warm.submit(JobSpec(command=in_process(hog), memory_mb=100, group="hog"))
        wide = warm.submit(JobSpec(command=["true"], cores_per_task=2, group="wide"))
        assert {handle.wait(120) for handle in quick} == {Outcome.SUCCESS}
        assert hungry.wait(120) is Outcome.SUCCESS, hungry.reason
        assert wide.wait(120) is Outcome.SUCCESS, wide.reason
        described = warm.member.describe()
    finally:
        warm.close()
    assert [a.record.outcome for a in hungry.attempts] == [Outcome.OOM, Outcome.SUCCESS]
    assert all(isinstance(h.member_id, str) for h in [*quick, hungry])  # ran on workers
    assert isinstance(wide.member_id, int)  # 2 cores fit no 1-core worker: a Flux job
    assert described["member"] == "flux" and described["flux_version"]


def test_ensemble_run_on_flux_with_workers(flux_uri, tmp_path):
    spec = tmp_path / "warm.yaml"
    spec.write_text(
        textwrap.dedent(
            """
            member: {workers: 2}
            jobs:
              - {name: probe, command: "sh -c 'cat /proc/$PPID/cmdline > probe-$ENSEMBLE_JOB_ID'",
                 count: 4}
            rules:
              - trigger: start
                action: {name: submit, label: probe}
            """
        )
    )
    result = ensemble("run", str(spec), "--member", "flux", "--flux-uri", flux_uri, "--json",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"]["probe"]["success"] == 4
    assert report["member"]["member"] == "flux" and report["member"]["target_workers"] == 2
    probes = sorted(tmp_path.glob("probe-warm_*"))
    assert len(probes) == 4 and all(WARM_WORKER in path.read_text() for path in probes)


def test_parsl_on_flux_with_workers(flux_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executor = EnsembleExecutor(
        member="flux",
        workers=2,
        rules=["retry-oom"],
        member_settings={"flux_uri": flux_uri},
        working_dir=str(tmp_path / "work"),
    )
    with parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))):
        assert WARM_WORKER in where().result(timeout=120)
        assert use_memory(150, parsl_resource_specification={"memory": 100}).result(120) == 150
        failing = exit_with(3)
        with pytest.raises(Exception, match="exit code 3"):
            failing.result(timeout=120)


def test_snakemake_on_flux_with_workers(flux_uri, tmp_path):
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule all:
                input: expand("out/{i}.txt", i=range(3))

            rule one:
                output: "out/{i}.txt"
                shell: "echo {wildcards.i} > {output}"
            """
        )
    )
    command = [SNAKEMAKE, "--executor", "ensemble", "-j", "2", "--ensemble-member", "flux"]
    command += ["--ensemble-flux-uri", flux_uri, "--ensemble-workers", "2"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["0.txt", "1.txt", "2.txt"]
    logs = list((tmp_path / ".snakemake" / "ensemble_logs").rglob("*.log"))
    assert logs and all(
        "snakemake_executor_plugin_ensemble/job.py" in log.read_text() for log in logs
    )
