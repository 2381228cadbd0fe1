"""JobSpec and its exact round trip through the Flux jobspec v1 that flux-python writes."""

import json

import pytest
from conftest import FIXTURES
from pydantic import ValidationError

from ensemble_core.spec import JobSpec
from ensemble_core.translate.flux import from_flux, to_flux

RECORDED = json.loads((FIXTURES / "flux" / "jobspecs.json").read_text())


@pytest.mark.parametrize("shape", sorted(RECORDED))
def test_recorded_jobspec_round_trips_exactly(shape):
    spec = from_flux(RECORDED[shape])
    assert spec.group == shape
    assert to_flux(spec).document == RECORDED[shape]


def test_recorded_shapes_read_as_users_write_them():
    assert from_flux(RECORDED["nodes2_tasks4"]).model_dump(include={"nodes", "tasks"}) == {
        "nodes": 2,
        "tasks": 4,
    }
    gpu = from_flux(RECORDED["gpu"])
    assert (gpu.cores_per_task, gpu.gpus_per_task) == (4, 1)
    assert from_flux(RECORDED["exclusive_nodes2"]).exclusive
    simple = from_flux(RECORDED["simple"])
    assert simple.command == ["echo", "hello world"]
    assert simple.walltime == 3600.0 and simple.stdout == "/work/run/{{id}}.out"


def test_fields_flux_does_not_enforce_are_carried_and_reported():
    spec = JobSpec(command=["app"], memory_mb=2048, disk_mb=10, attempt=3, attributes={"a": 1})
    translation = to_flux(spec)
    assert translation.document["attributes"]["user"]["ensemble"] == {
        "memory_mb": 2048,
        "disk_mb": 10,
        "attempt": 3,
    }
    assert [lost.split()[0] for lost in translation.lost] == ["memory_mb", "disk_mb"]
    assert from_flux(translation.document) == spec


def test_uneven_tasks_over_nodes_use_a_total_count_like_flux():
    document = to_flux(JobSpec(command=["x"], nodes=2, tasks=3)).document
    assert document["tasks"][0]["count"] == {"total": 3}
    assert document["resources"][0]["with"][0]["count"] == 2
    assert from_flux(document).tasks == 3


def test_more_nodes_than_tasks_is_refused():
    with pytest.raises(ValueError, match="nodes"):
        to_flux(JobSpec(command=["x"], nodes=4, tasks=2))


def test_command_string_is_split_like_a_shell():
    assert JobSpec(command="echo 'hello world'").command == ["echo", "hello world"]


def test_scaled_applies_rule_changes():
    spec = JobSpec(command=["x"], memory_mb=1000, walltime=60)
    scaled = spec.scaled({"memory_mb": "x2", "walltime": "x1.5", "cores_per_task": 4})
    assert (scaled.memory_mb, scaled.walltime, scaled.cores_per_task) == (2000, 90.0, 4)
    assert spec.scaled({"memory_mb": "+24"}).memory_mb == 1024
    with pytest.raises(ValueError, match="sets none"):
        JobSpec(command=["x"]).scaled({"memory_mb": "x2"})


def test_invalid_values_are_rejected():
    with pytest.raises(ValidationError):
        JobSpec(command=[], tasks=1)
    with pytest.raises(ValidationError):
        JobSpec(command=["x"], tasks=0)
