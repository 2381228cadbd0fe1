"""Fault injection: a seeded `FaultyMember` around the real local member, 1,000 jobs each through
the controller, Parsl's `EnsembleExecutor` and Snakemake's `--executor ensemble`.

Whatever is injected (member calls that raise, events dropped, repeated, delayed, a stream that
breaks and resumes with overlap), every job resolves exactly once, the counts add up and no
process is left. One fixed seed here; `make soak` runs many seeds for longer.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import parsl
import pytest
from parsl import python_app
from parsl.config import Config
from snakemake import api
from snakemake.settings import types as settings
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

import ensemble_core.api
from ensemble_core.members import create_member
from ensemble_core.testing.faults import Faults, FaultyMember
from ensemble_core.testing.processes import processes_with
from ensemble_core.testing.soak import soak
from parsl_ensemble import EnsembleExecutor
from snakemake_executor_plugin_ensemble import ExecutorSettings
from snakemake_executor_plugin_ensemble.executor import Executor

SEED = 20261123
JOBS = 1000
#: Front doors: what a member's refusals and a broken stream do to their jobs (no cancels from
#: outside, so resize faults have nothing to act on).
FRONT_DOOR_FAULTS = Faults(
    seed=SEED,
    submit_error=0.01,
    drop=0.02,
    duplicate=0.05,
    delay=0.005,
    stream_break=0.002,
)


def test_the_controller_keeps_every_invariant_under_faults(tmp_path):
    result = soak(SEED, JOBS, tmp_path / "logs")
    assert result.broken == []
    injected = set(result.injected)
    assert {"submit-error", "cancel-error", "drop", "duplicate", "delay", "break"} <= injected
    assert {"grow-error", "shrink-error"} & injected, result.injected
    assert sum(result.outcomes.values()) == JOBS
    assert result.attempts > JOBS  # failures and timeouts were resubmitted


@pytest.fixture
def faulty_members(monkeypatch):
    """Every member a front door opens is wrapped in a FaultyMember (kept for the asserts)."""
    made: list[FaultyMember] = []

    def create(name, **member_settings):
        member = FaultyMember(create_member(name, **member_settings), FRONT_DOOR_FAULTS)
        made.append(member)
        return member

    monkeypatch.setattr(ensemble_core.api, "create_member", create)
    return made


@python_app
def square(value):
    return value * value


def test_every_parsl_future_resolves_under_faults(tmp_path, monkeypatch, faulty_members):
    monkeypatch.chdir(tmp_path)
    executor = EnsembleExecutor(member_settings={"log_dir": str(tmp_path / "logs")})
    config = Config(executors=[executor], run_dir=str(tmp_path / "runinfo"))
    with parsl.load(config):
        futures = [square(value) for value in range(JOBS)]
        outcomes = Counter()
        for value, future in enumerate(futures):
            error = future.exception(timeout=300)
            if error is None:
                assert future.result() == value * value
                outcomes["ok"] += 1
            elif "submission to the local member failed: injected fault" in str(error):
                outcomes["refused"] += 1
            else:  # its `finish` event was dropped: the exit status is unknown
                assert "the job ended without a finish status" in str(error)
                outcomes["no finish"] += 1
    (member,) = faulty_members
    assert sum(outcomes.values()) == JOBS
    assert outcomes["refused"] == member.injected["submit-error"] > 0
    assert outcomes["no finish"] <= member.injected["drop"]
    assert member.injected["drop"] and member.injected["duplicate"] and member.injected["break"]
    assert executor.outstanding == 0
    assert not list((tmp_path / "runinfo").rglob("task-*.in"))
    assert not processes_with(str(tmp_path))  # no worker of this run is left


def test_every_snakemake_job_resolves_under_faults(tmp_path, mocker, faulty_members):
    """Snakemake's own scheduler in this process; each job's command is its shell line (a
    spawned Snakemake per job would make 1,000 jobs take half an hour)."""
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            rule all:
                input: expand("out/{{i}}.txt", i=range({JOBS}))
            rule one:
                output: "out/{{i}}.txt"
                shell: "touch {{output}}"
            """
        )
    )
    mocker.patch.object(
        Executor,
        "format_job_exec",
        lambda self, job: f"mkdir -p out && touch {' '.join(job.output)}",
    )
    reports: dict[str, list[str]] = {}
    for name in ("report_job_success", "report_job_error"):
        original = getattr(Executor, name)

        def counted(self, job_info: SubmittedJobInfo, *args, _original=original, **kwargs):
            reports.setdefault(job_info.job.jobid, []).append(kwargs.get("msg") or "success")
            return _original(self, job_info, *args, **kwargs)

        mocker.patch.object(Executor, name, counted)
    with pytest.raises(Exception, match=r"did not complete successfully|Exiting because"):
        run_snakemake_in_process(tmp_path)
    (member,) = faulty_members
    assert len(reports) == JOBS and {len(each) for each in reports.values()} == {1}
    outcomes = Counter()
    for (message,) in reports.values():
        if message == "success":
            outcomes["ok"] += 1
        elif "submission to the local member failed: injected fault" in message:
            outcomes["refused"] += 1
        else:  # its `finish` event was dropped: the exit status is unknown
            assert "the job ended without a finish status" in message
            outcomes["no finish"] += 1
    assert outcomes["refused"] == member.injected["submit-error"] > 0
    assert outcomes["no finish"] <= member.injected["drop"]
    assert member.injected["duplicate"] and member.injected["break"]
    assert len(list((tmp_path / "out").glob("*.txt"))) == outcomes["ok"]


def run_snakemake_in_process(workdir: Path) -> None:
    with api.SnakemakeApi(settings.OutputSettings(quiet={settings.Quietness.ALL})) as snakemake:
        workflow = snakemake.workflow(
            resource_settings=settings.ResourceSettings(cores=1, nodes=64),
            storage_settings=settings.StorageSettings(),
            workdir=workdir,
            snakefile=workdir / "Snakefile",
        )
        workflow.dag().execute_workflow(
            executor="ensemble",
            executor_settings=ExecutorSettings(cores=2),
            execution_settings=settings.ExecutionSettings(keep_going=True),
        )
