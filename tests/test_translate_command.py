"""`translate_command`: what `ensemble translate --to TARGET SPEC` prints, and its errors."""

import json
from pathlib import Path

import pytest
import yaml

from ensemble_core.errors import ConfigError
from ensemble_core.translate.command import translate_command

FLUX_JOBSPECS = Path(__file__).parent / "fixtures" / "flux" / "jobspecs.json"

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


def test_jobspec_yaml_to_kubernetes_prints_a_job_manifest(job_yaml):
    text, lost = translate_command(job_yaml, "kubernetes", image="python:3.12", namespace="ml")
    job = yaml.safe_load(text)
    assert job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"]["ensemble.flux-framework.org/ensemble"] == "train"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "python:3.12"
    assert container["command"] == ["python", "train.py", "--epochs", "3"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2048Mi"}
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600
    assert lost == []


def test_kubernetes_without_image_says_so(job_yaml):
    text, lost = translate_command(job_yaml, "kubernetes")
    assert "image: IMAGE-NOT-SET" in text
    assert lost == ["image (none given: pass --image; the Job names IMAGE-NOT-SET)"]


def test_jobspec_yaml_to_flux_and_slurm(job_yaml):
    text, lost = translate_command(job_yaml, "flux")
    jobspec = json.loads(text)
    assert jobspec["version"] == 1
    assert jobspec["attributes"]["system"]["duration"] == 600.0
    assert lost == ["memory_mb (not enforced by Flux jobspec v1)"]
    text, lost = translate_command(job_yaml, "slurm")
    assert "#SBATCH --time=00:10:00\n" in text
    assert text.endswith("srun --cpus-per-task=1 python train.py --epochs 3\n")
    assert lost == []


def test_flux_jobspec_json_is_read_as_flux(tmp_path):
    jobspec = json.loads(FLUX_JOBSPECS.read_text())["nodes2_tasks4"]
    path = tmp_path / "jobspec.json"
    path.write_text(json.dumps(jobspec))
    text, lost = translate_command(str(path), "flux")
    assert json.loads(text) == jobspec
    text, lost = translate_command(str(path), "kubernetes", image="img")
    assert "nodes=2 (a Job's Pod runs on one node)" in lost
    assert any(entry.startswith("tasks=4 as separate processes") for entry in lost)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("command: [", "not valid YAML or JSON (line 1, column 11: expected the node content"),
        ("- a list", "expected a JobSpec or a Flux jobspec (a mapping)"),
        ("group: x", "not a valid JobSpec (command: Field required)"),
        ("command: [x]\ntasks: 0", "tasks: Input should be greater than or equal to 1"),
        ('{"version": 2, "resources": []}', "not a valid Flux jobspec v1"),
    ],
)
def test_invalid_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as error:
        translate_command(str(path), "slurm")
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_missing_file_and_unknown_target(tmp_path, job_yaml):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read it \(No such file"):
        translate_command(str(tmp_path / "nope.yaml"), "flux")
    with pytest.raises(ConfigError, match="unknown target 'lsf': choose one of flux, kubernetes"):
        translate_command(job_yaml, "lsf")
