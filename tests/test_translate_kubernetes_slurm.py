"""JobSpec -> Kubernetes Job and Slurm batch script: exact documents and what each loses."""

import json
from pathlib import Path

import pytest

from ensemble_core.spec import JobSpec
from ensemble_core.translate.flux import from_flux
from ensemble_core.translate.kubernetes import dns_label, label_value, to_kubernetes
from ensemble_core.translate.slurm import slurm_time, to_slurm

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
    assert translation.lost == []


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


def test_slurm_script_for_a_full_job():
    translation = to_slurm(FULL)
    assert translation.document == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=align\n"
        "#SBATCH --nodes=2\n"
        "#SBATCH --ntasks=4\n"
        "#SBATCH --cpus-per-task=2\n"
        "#SBATCH --gpus-per-task=1\n"
        "#SBATCH --exclusive\n"
        "#SBATCH --mem=2048M\n"
        "#SBATCH --tmp=500M\n"
        "#SBATCH --time=1-01:01:02\n"
        '#SBATCH --chdir="/work dir"\n'
        '#SBATCH --output="out %%j.log"\n'
        "#SBATCH --error=err.log\n"
        "\n"
        "export A=1,2\n"
        "srun --cpus-per-task=2 python -c 'print('\"'\"'hi, there'\"'\"')'\n"
    )
    assert translation.lost == [
        "group=Align Reads! (a Slurm job has one name; it holds the job's name)",
        "attributes ['k'] (Slurm has no free job attributes)",
        "environment variable 'BAD-NAME' (not a valid shell variable name)",
    ]


def test_slurm_script_for_a_small_job_uses_the_group_as_name():
    translation = to_slurm(JobSpec(command=["true"], group="echo"))
    assert translation.document == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=echo\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "\n"
        "srun --cpus-per-task=1 true\n"
    )
    assert translation.lost == []


def test_slurm_memory_without_nodes_is_per_cpu_for_several_tasks():
    spec = JobSpec(command=["a.out"], tasks=3, cores_per_task=2, memory_mb=1000, disk_mb=10)
    lines = to_slurm(spec).document.splitlines()
    assert "#SBATCH --mem-per-cpu=167M" in lines
    assert "#SBATCH --tmp=10M" in lines
    single = to_slurm(JobSpec(command=["a.out"], memory_mb=1000)).document.splitlines()
    assert "#SBATCH --mem=1000M" in single


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(1, "00:00:01"), (59.01, "00:01:00"), (3600, "01:00:00"), (86400, "1-00:00:00")],
)
def test_slurm_time(seconds, expected):
    assert slurm_time(seconds) == expected


def test_every_recorded_flux_jobspec_translates():
    for name, jobspec in json.loads(FLUX_JOBSPECS.read_text()).items():
        spec = from_flux(jobspec)
        job = to_kubernetes(spec, image="img", namespace="default", ensemble_id="e").document
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == spec.command, name
        assert container["resources"]["limits"]["cpu"] == str(spec.total_cores), name
        assert f"--ntasks={spec.tasks}" in to_slurm(spec).document, name
