"""Parsl's `resource_specification` as JobSpec fields.

The keys are Parsl FluxExecutor's, so a config moves between the two unchanged, plus `memory`
(MB, the whole job), `walltime` (s), `group` (the label rules and metrics use) and, with several
members, `member` (where the app runs) and `requires` (features its member must offer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parsl.executors.errors import InvalidResourceSpecification

from ensemble_core import bounds
from ensemble_core.matching import MEMBER_ATTRIBUTE, REQUIRES_ATTRIBUTE

#: resource_specification key -> JobSpec field
KEYS = {
    "num_tasks": "tasks",
    "num_nodes": "nodes",
    "cores_per_task": "cores_per_task",
    "gpus_per_task": "gpus_per_task",
    "memory": "memory_mb",
    "walltime": "walltime",
    "group": "group",
}
FIELDS = {field: key for key, field in KEYS.items()}
#: resource_specification key -> JobSpec attribute (several members: docs/several-members.md)
ATTRIBUTE_KEYS = {"member": MEMBER_ATTRIBUTE, "requires": REQUIRES_ATTRIBUTE}


#: The range of each numeric key (num_nodes 0: FluxExecutor's "let the queue choose").
KEY_BOUNDS = {
    "num_tasks": bounds.TASKS,
    "num_nodes": bounds.Bound(0, bounds.NODES.high, whole=True),
    "cores_per_task": bounds.CORES,
    "gpus_per_task": bounds.GPUS,
    "memory": bounds.MEGABYTES,
    "walltime": bounds.Bound(0.001, bounds.DURATION.high),
}


def job_fields(resource_specification: Any) -> tuple[dict[str, Any], list[str]]:
    """The JobSpec fields the keys set, and the keys this executor does not know; an
    InvalidResourceSpecification for a value out of range, or for what is not a mapping."""
    if resource_specification is None:
        return {}, []
    if not isinstance(resource_specification, Mapping):
        raise InvalidResourceSpecification(
            set(),
            "resource_specification must be a dict such as {'cores_per_task': 2}, not "
            f"{type(resource_specification).__name__}",
        )
    fields: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in resource_specification.items():
        if key in ATTRIBUTE_KEYS and value is not None:
            fields.setdefault("attributes", {})[ATTRIBUTE_KEYS[key]] = _attribute(key, value)
            continue
        field = KEYS.get(key)
        if field is None:
            unknown.append(key)
            continue
        if value is None or (key == "num_nodes" and value == 0):
            continue  # FluxExecutor's num_nodes=0: let the queue choose
        bound = KEY_BOUNDS.get(key)
        problem = bound.problem(value) if bound is not None else None
        if key == "group" and (not isinstance(value, str) or not value):
            problem = f"must be a group name (got {value!r})"
        if problem:
            raise InvalidResourceSpecification({key}, f"{key}: {problem}")
        fields[field] = value
    return fields, unknown


def _attribute(key: str, value: Any) -> Any:
    """`member`: a member's name; `requires`: a list of features (or text, split at commas)."""
    if key == "member" and isinstance(value, str) and value:
        return value
    if key == "requires" and (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    ):
        return value
    wanted = "a member's name" if key == "member" else "a list of features such as ['a100']"
    raise InvalidResourceSpecification({key}, f"{key}: must be {wanted} (got {value!r})")
