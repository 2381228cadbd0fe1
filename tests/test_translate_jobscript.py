"""Batch scripts as job groups (`script:`), run unchanged on the real local member, and the
example in examples/batch/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_translate_command import ensemble

from ensemble_core.errors import ConfigError, MemberError
from ensemble_core.members.flux import import_flux
from ensemble_core.translate.jobscript import job_from_script

EXAMPLE = Path(__file__).parents[1] / "examples" / "batch"


def test_the_example_slurm_script_runs_on_the_local_member(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "batch")
    result = ensemble("run", "ensemble.yaml", "--json", cwd=tmp_path / "batch")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exit"] == "completed"
    assert report["groups"]["pi"]["success"] == 3
    outputs = sorted((tmp_path / "batch").glob("pi-*.out"))
    assert len(outputs) == 3
    for output in outputs:
        lines = output.read_text().splitlines()
        assert lines[0] == "estimating pi with 1 cpu(s) as estimate-pi"
        assert 3.0 < float(lines[1].removeprefix("pi is about ")) < 3.3


@pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH")
def test_the_example_slurm_script_runs_unchanged_on_flux(tmp_path):
    try:
        import_flux()
    except MemberError as error:
        pytest.skip(str(error))
    shutil.copytree(EXAMPLE, tmp_path / "batch")
    command = ["flux", "start", "--test-size=1", sys.executable, "-m", "ensemble_core.cli"]
    command += ["run", "ensemble.yaml", "--member", "flux", "--json"]
    result = subprocess.run(
        command, cwd=tmp_path / "batch", capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["groups"]["pi"]["success"] == 3
    assert 'run.sbatch: not carried: queue "debug"' in result.stderr
    outputs = list((tmp_path / "batch").glob("pi-*.out"))
    assert len(outputs) == 3
    assert all("as estimate-pi" in output.read_text() for output in outputs)


def test_a_pbs_script_finds_its_submission_directory_and_its_exports(tmp_path):
    (tmp_path / "input.txt").write_text("data\n")
    (tmp_path / "job.pbs").write_text(
        "#PBS -N count\n#PBS -l select=1:ncpus=1:mem=100mb,walltime=60\n#PBS -o count.log\n"
        "#PBS -j oe\n\ncd $PBS_O_WORKDIR\nexport WORD=data\ngrep -c $WORD input.txt\n"
    )
    (tmp_path / "ensemble.yaml").write_text(
        "jobs: [{name: count, script: job.pbs}]\n"
        "rules: [{trigger: start, action: {name: submit, label: count}}]\n"
    )
    result = ensemble("run", "ensemble.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["groups"]["count"]["success"] == 1
    assert (tmp_path / "count.log").read_text() == "1\n"


def test_a_script_job_has_its_directives_and_its_schedulers_variables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("job.sbatch").write_text(
        "#!/bin/bash\n#SBATCH -J sim -N 1 -n 2 -c 3 --mem=1G -t 5 -p debug\n"
        "export A=1\nsrun ./sim\n"
    )
    spec = job_from_script("job.sbatch")
    assert spec.attributes == {}  # the partition is the Slurm cluster's, logged as not carried
    assert (spec.name, spec.nodes, spec.tasks, spec.cores_per_task) == ("sim", 1, 2, 3)
    assert (spec.memory_mb, spec.walltime, spec.command) == (1024, 300.0, ["./sim"])
    assert spec.environment == {
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_NAME": "sim",
        "SLURM_NTASKS": "2",
        "SLURM_NPROCS": "2",
        "SLURM_CPUS_PER_TASK": "3",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "A": "1",
    }


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("job.yaml", "command: [x]\n", "job.yaml:1: a jobspec document, not a batch script"),
        ("job.sh", "#!/bin/sh\nx\n", "job.sh:1: a script with no #SBATCH, #PBS, #BSUB"),
        (
            "job.sbatch",
            "#!/bin/sh\n#SBATCH -n4\nmodule load x\nsrun ./a\n",
            "job.sbatch: the body is more than one command and the job has 4 tasks",
        ),
    ],
)
def test_what_cannot_run_as_a_job_group_is_refused(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    with pytest.raises(ConfigError) as error:
        job_from_script(name)
    assert str(error.value).startswith(message)
    with pytest.raises(ConfigError, match=r"nope\.sbatch: no such file \(a script's path is"):
        job_from_script("nope.sbatch")


def test_the_ensemble_file_names_the_group_and_lists_what_the_script_loses(tmp_path):
    (tmp_path / "job.sbatch").write_text("#!/bin/sh\n#SBATCH --qos=high\n#SBATCH --bogus\nx\n")
    (tmp_path / "bad.yaml").write_text("jobs:\n  - name: a\n    script: job.sbatch\n")
    result = ensemble("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "ensemble: bad.yaml:2: jobs[0]: script: job.sbatch:3: unknown option --bogus\n"
    )
    (tmp_path / "job.sbatch").write_text("#!/bin/sh\n#SBATCH --qos=high\nx\n")
    result = ensemble("validate", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == (
        "job.sbatch: not carried: line 2: --qos=high (no JobSpec field holds it)\n"
    )
    (tmp_path / "both.yaml").write_text("jobs:\n  - {name: a, script: job.sbatch, nodes: 2}\n")
    result = ensemble("validate", "both.yaml", cwd=tmp_path)
    assert result.stderr.startswith("ensemble: both.yaml:2: jobs[0]: nodes: a group with a script")
