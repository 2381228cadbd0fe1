"""Parsl's `resource_specification` as JobSpec fields.

The keys are Parsl FluxExecutor's, so a config moves between the two unchanged, plus `memory`
(MB, the whole job), `walltime` (s) and `group` (the label rules and metrics use).
"""

from __future__ import annotations

from typing import Any

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


def job_fields(resource_specification: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The JobSpec fields the keys set, and the keys this executor does not know."""
    fields: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in (resource_specification or {}).items():
        field = KEYS.get(key)
        if field is None:
            unknown.append(key)
        elif value is not None and not (key == "num_nodes" and value == 0):
            fields[field] = value  # FluxExecutor's num_nodes=0: let the queue choose
    return fields, unknown
