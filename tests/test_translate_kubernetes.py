"""JobSpec <-> Kubernetes Job: exact documents, what each way loses, and bad manifests."""

import json
from pathlib import Path

import pytest
import yaml

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate.flux import from_flux
from ensemble_core.translate.kubernetes import (
    dns_label,
    from_kubernetes,
    label_value,
    to_kubernetes,
)
from ensemble_core.translate.slurm import to_slurm

FLUX_JOBSPECS = Path(__file__).parent / "fixtures" / "flux" / "jobspecs.json"

FULL = JobSpec(
    command=["python", "-c", "print('hi, there')"],
    group="Align Reads!",
    name="align",
    nodes=2,
    tasks=4,
    cores_per_task=2,
    gpus_per_task=1,
    exclusive=True,
    memory_mb=4096,
    disk_mb=1000,
    walltime=90061.5,
    environment={"A": "1,2", "BAD-NAME": "x"},
    cwd="/work dir",
    stdout="out %j.log",
    stderr="err.log",
    attributes={"k": 1},
    attempt=2,
)


def test_simple_job_is_one_pod_with_its_resources_and_deadline():
    spec = JobSpec(
        command=["sleep", "10"],
        group="sim",
        memory_mb=512,
        walltime=59.2,
        environment={"OMP_NUM_THREADS": "1"},
        cwd="/data",
    )
    translation = to_kubernetes(
        spec, image="busybox:1.36", namespace="science", ensemble_id="ens-a1", name="ens-a1-1"
    )
    labels = {
        "ensemble.flux-framework.org/ensemble": "ens-a1",
        "ensemble.flux-framework.org/group": "sim",
        "ensemble.flux-framework.org/attempt": "1",
    }
    quantities = {"cpu": "1", "memory": "512Mi"}
    assert translation.document == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "ens-a1-1",
            "namespace": "science",
            "labels": labels,
            "annotations": {"ensemble.flux-framework.org/group": "sim"},
        },
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "job",
                            "image": "busybox:1.36",
                            "command": ["sleep", "10"],
                            "resources": {"requests": quantities, "limits": quantities},
                            "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                            "workingDir": "/data",
                        }
                    ],
                    "activeDeadlineSeconds": 60,
                },
            },
        },
    }
    assert translation.lost == ["walltime=59.2s exactly (rounded up to whole seconds)"]


def test_full_job_carries_resources_and_lists_what_kubernetes_cannot_hold():
    translation = to_kubernetes(
        FULL, image="python:3.12", namespace="ns", ensemble_id="ens 1", ttl_seconds=120
    )
    job = translation.document
    assert job["metadata"]["generateName"] == "align-"
    assert "name" not in job["metadata"]
    assert job["metadata"]["labels"] == {
        "ensemble.flux-framework.org/ensemble": "ens-1",
        "ensemble.flux-framework.org/group": "Align-Reads",
        "ensemble.flux-framework.org/attempt": "2",
    }
    assert job["metadata"]["annotations"] == {
        "ensemble.flux-framework.org/group": "Align Reads!",
        "ensemble.flux-framework.org/name": "align",
        "ensemble.flux-framework.org/attributes": '{"k": 1}',
    }
    assert job["spec"]["ttlSecondsAfterFinished"] == 120
    container = job["spec"]["template"]["spec"]["containers"][0]
    expected = {
        "cpu": "8",
        "memory": "4096Mi",
        "ephemeral-storage": "1000Mi",
        "nvidia.com/gpu": "4",
    }
    assert container["resources"] == {"requests": expected, "limits": expected}
    assert container["env"] == [{"name": "A", "value": "1,2"}, {"name": "BAD-NAME", "value": "x"}]
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 90062
    assert translation.lost == [
        "nodes=2 (a Job's Pod runs on one node)",
        "tasks=4 as separate processes (the command runs once, with all 8 cores)",
        "exclusive (a Pod cannot reserve a whole node)",
        "walltime=90061.5s exactly (rounded up to whole seconds)",
        "stdout=out %j.log (the container's output goes to the Pod log)",
        "stderr=err.log (the container's output goes to the Pod log)",
    ]


def test_kubernetes_document_is_accepted_by_the_official_client_model():
    client = pytest.importorskip("kubernetes.client")
    job = to_kubernetes(FULL, image="python:3.12", namespace="ns", ensemble_id="e", name="e-1")
    model = client.V1Job.model_validate(job.document)
    assert client.ApiClient().sanitize_for_serialization(model) == job.document


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("align", "align"),
        ("Align Reads!", "Align-Reads"),
        ("-x-", "x"),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),
        ("über", "ber"),
        ("", ""),
    ],
)
def test_label_values_follow_the_label_grammar(text, expected):
    assert label_value(text) == expected


def test_dns_label_lowercases_and_never_returns_empty():
    assert dns_label("Align_Reads 2") == "align-reads-2"
    assert dns_label("!!!") == "job"
    assert dns_label("x" * 80, 10) == "x" * 10


def test_every_recorded_flux_jobspec_translates():
    for name, jobspec in json.loads(FLUX_JOBSPECS.read_text()).items():
        spec = from_flux(jobspec)
        job = to_kubernetes(spec, image="img", namespace="default", ensemble_id="e").document
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == spec.command, name
        assert container["resources"]["limits"]["cpu"] == str(spec.total_cores), name
        assert f"--ntasks={spec.tasks}" in to_slurm(spec).document, name


def test_a_written_job_reads_back_as_its_jobspec_on_one_pod():
    job = to_kubernetes(FULL, image="python:3.12", namespace="ns", ensemble_id="e").document
    read = from_kubernetes(yaml.safe_dump(job), "job.yaml")
    assert read.document == FULL.model_copy(
        update={
            "nodes": None,
            "tasks": 1,
            "cores_per_task": 8,
            "gpus_per_task": 4,
            "exclusive": False,
            "walltime": 90062.0,
            "stdout": None,
            "stderr": None,
        }
    )
    assert read.lost == ["image python:3.12 (a JobSpec runs on the member's image)"]


def test_a_foreign_job_is_named_by_its_metadata_and_its_command_takes_its_args():
    manifest = """\
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      containers:
        - name: pi
          image: perl
          command: [perl, -wle]
          args: [print 1]
          resources: {limits: {cpu: 1500m, memory: 1G, amd.com/gpu: 2}}
"""
    read = from_kubernetes(manifest, "pi.yaml")
    assert read.document.model_dump(exclude_defaults=True) == {
        "command": ["perl", "-wle", "print 1"],
        "name": "pi",
        "cores_per_task": 2,
        "gpus_per_task": 2,
        "memory_mb": 954,
    }
    assert "cpu 1500m (a JobSpec counts whole cores: 2)" in read.lost
    assert "backoffLimit 6 (the ensemble's rules decide resubmission)" in read.lost


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("kind: Pod\n", "job.yaml:1: no Kubernetes Jobs (kind: Job): give a file with one"),
        (
            "kind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n"
            "          image: busybox\n",
            "job.yaml:6: the container names no command (it runs its image's entrypoint)",
        ),
        (
            "kind: Job\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n"
            "          command: [x]\n          resources: {limits: {memory: lots}}\n",
            "job.yaml:6: memory must be a quantity such as 2, 500m or 4Gi, not 'lots'",
        ),
        ("kind: Job\nspec: [\n", "job.yaml:3: not valid YAML or JSON"),
        (
            "kind: Job\nspec: {template: {spec: {containers: [{command: x}]}}}\n",
            "job.yaml:2: command is a list of strings",
        ),
    ],
)
def test_bad_manifests_are_one_line_naming_the_place(manifest, message):
    with pytest.raises(ConfigError) as error:
        from_kubernetes(manifest, "job.yaml")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)
