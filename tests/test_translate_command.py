"""`ensemble translate [--from FORMAT] --to FORMAT FILE`: detection, output, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ensemble_core.errors import ConfigError
from ensemble_core.translate.command import translate_file

FIXTURES = Path(__file__).parent / "fixtures"
FLUX_JOBSPECS = FIXTURES / "flux" / "jobspecs.json"

JOB_YAML = """\
command: python train.py --epochs 3
group: train
memory_mb: 2048
walltime: 600
environment: {SEED: "1"}
"""


@pytest.fixture
def job_yaml(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(JOB_YAML)
    return str(path)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_jobspec_yaml_to_kubernetes_prints_a_job_manifest(job_yaml):
    result = translate_file(job_yaml, "kubernetes", image="python:3.12", namespace="ml")
    job = yaml.safe_load(result.text)
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"]["ensemble.flux-framework.org/ensemble"] == "train"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "python:3.12"
    assert container["command"] == ["python", "train.py", "--epochs", "3"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2048Mi"}
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600
    assert (result.lost_reading, result.lost_writing) == ([], [])


def test_kubernetes_without_image_says_so(job_yaml):
    result = translate_file(job_yaml, "kubernetes")
    assert "image: IMAGE-NOT-SET" in result.text
    assert result.lost_writing == ["image (none given: pass --image; the Job names IMAGE-NOT-SET)"]


def test_jobspec_yaml_to_flux_slurm_and_back_to_a_jobspec(job_yaml, tmp_path):
    result = translate_file(job_yaml, "flux")
    assert json.loads(result.text)["attributes"]["system"]["duration"] == 600.0
    assert result.lost_writing == ["memory_mb (not enforced by Flux jobspec v1)"]
    slurm = translate_file(job_yaml, "slurm")
    assert "#SBATCH --time=00:10:00\n" in slurm.text
    assert slurm.text.endswith("srun --cpus-per-task=1 python train.py --epochs 3\n")
    back = translate_file(write(tmp_path, "train.sbatch", slurm.text), "jobspec")
    assert yaml.safe_load(back.text) == {
        "command": ["python", "train.py", "--epochs", "3"],
        "name": "train",
        "memory_mb": 2048,
        "walltime": 600.0,
        "environment": {"SEED": "1"},
    }


def test_flux_jobspec_json_is_read_as_flux(tmp_path):
    jobspec = json.loads(FLUX_JOBSPECS.read_text())["nodes2_tasks4"]
    path = write(tmp_path, "jobspec.json", json.dumps(jobspec))
    assert json.loads(translate_file(path, "flux").text) == jobspec
    lost = translate_file(path, "kubernetes", image="img").lost_writing
    assert "nodes=2 (a Job's Pod runs on one node)" in lost


@pytest.mark.parametrize(
    ("name", "text", "source", "target_line"),
    [
        ("job.sbatch", "#!/bin/bash\n#SBATCH -n2\nhostname\n", "slurm", "#PBS -l select=2"),
        ("job.pbs", "#PBS -l select=1:ncpus=2\nhostname\n", "pbs", "#SBATCH --ntasks=1"),
        ("job.lsf", "#BSUB -n 3\nhostname\n", "lsf", "#SBATCH --ntasks=3"),
        ("job.sh", "#!/bin/sh\n# flux: -n2\nhostname\n", "flux-batch", "#SBATCH --ntasks=2"),
    ],
)
def test_scripts_are_told_apart_by_their_directives(tmp_path, name, text, source, target_line):
    path = write(tmp_path, name, text)
    target = "pbs" if source == "slurm" else "slurm"
    assert target_line in translate_file(path, target).text
    assert (
        translate_file(path, target, source_format=source).text == translate_file(path, target).text
    )


def test_from_names_the_format_when_the_file_does_not(tmp_path):
    path = write(tmp_path, "plain.sh", "#!/bin/bash\n./run --fast\n")
    with pytest.raises(ConfigError, match=r"plain\.sh:1: a script with no #SBATCH, #PBS, #BSUB"):
        translate_file(path, "jobspec")
    result = translate_file(path, "jobspec", source_format="pbs")
    assert yaml.safe_load(result.text) == {"command": ["./run", "--fast"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("command: [", ":1: not valid YAML or JSON (expected the node content"),
        ("- a list", ":1: cannot tell the format: not a batch script with directives"),
        ("group: x", ":1: cannot tell the format"),
        ("command: [x]\ntasks: 0", ":2: not a valid JobSpec (tasks: Input should be greater"),
        ('{"version": 2, "resources": []}', ":1: not a valid Flux jobspec v1"),
        ("#!/bin/sh\n#SBATCH -n1\n#PBS -N x\nx\n", ":2: directives of several schedulers"),
        ("#!/bin/sh\n#SBATCH --ntasks=many\nx\n", ":2: --ntasks must be a whole number"),
    ],
)
def test_invalid_files_give_one_line_errors(tmp_path, text, message):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as error:
        translate_file(path, "slurm")
    assert str(error.value).startswith(path + message), str(error.value)
    assert "\n" not in str(error.value)


def test_unreadable_files_and_unknown_formats(tmp_path, job_yaml):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read it \(No such file"):
        translate_file(str(tmp_path / "nope.yaml"), "flux")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary:1: the file is UTF-16 text: save it as UTF-8"):
        translate_file(str(binary), "flux")
    with pytest.raises(ConfigError, match="unknown format 'sge': choose one of jobspec, flux"):
        translate_file(job_yaml, "sge")
    too_many = write(tmp_path, "many.yaml", "command: [x]\nnodes: 3\ntasks: 2\n")
    with pytest.raises(ConfigError, match=r"many\.yaml: cannot be written as flux: nodes \(3\)"):
        translate_file(too_many, "flux")


def ensemble(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ensemble_core.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_prints_the_translation_and_lists_what_was_lost(tmp_path):
    write(tmp_path, "job.sbatch", "#!/bin/bash\n#SBATCH -n 2 --qos=high\nsrun ./app\n")
    result = ensemble("translate", "--to", "flux-batch", "job.sbatch", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("# flux: -n2\n\nflux run -n2 ./app\n")
    assert result.stderr == (
        "not carried from job.sbatch: line 2: --qos=high (no JobSpec field holds it)\n"
    )


def test_the_cli_refuses_bad_input_with_one_line_and_status_2(tmp_path):
    write(tmp_path, "job.sbatch", "#!/bin/bash\n#SBATCH -n 2\n#SBATCH --walltime=1:00\nx\n")
    result = ensemble("translate", "--to", "pbs", "job.sbatch", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "ensemble: job.sbatch:3: unknown option --walltime\n"
