"""JobSpec <-> Flux jobspec version 1 (RFC 25), the lingua franca of the ensemble.

The shape matches what flux-python's `JobspecV1.from_command` writes, so a jobspec built by Flux
converts to a JobSpec and back to an equal dict. Fields v1 cannot express (memory, disk, attempt)
ride in `attributes.user.ensemble` so that nothing is dropped; Flux itself does not enforce them.
"""

from __future__ import annotations

import math
from typing import Any

from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BATCH, Translation

ENSEMBLE_KEY = "ensemble"
_CARRIED_IN_USER = ("memory_mb", "disk_mb", "attempt")


def _slot(count: int, cores: int, gpus: int) -> dict[str, Any]:
    children: list[dict[str, Any]] = [{"type": "core", "count": cores}]
    if gpus:
        children.append({"type": "gpu", "count": gpus})
    return {"type": "slot", "count": count, "with": children, "label": "task"}


def to_flux(spec: JobSpec) -> Translation:
    """The Flux jobspec v1 dict for a JobSpec, with what Flux will not enforce listed as lost."""
    lost: list[str] = []
    task_count: dict[str, int] = {"per_slot": 1}
    if spec.nodes is not None:
        if spec.nodes > spec.tasks:
            raise ValueError(f"nodes ({spec.nodes}) must not be greater than tasks ({spec.tasks})")
        slots = math.ceil(spec.tasks / spec.nodes)
        if spec.tasks % spec.nodes:
            task_count = {"total": spec.tasks}
        node: dict[str, Any] = {"type": "node", "count": spec.nodes}
        if spec.exclusive:
            node["exclusive"] = True
        node["with"] = [_slot(slots, spec.cores_per_task, spec.gpus_per_task)]
        resources = [node]
    else:
        if spec.exclusive:
            lost.append("exclusive (Flux allows it only with a node count)")
        resources = [_slot(spec.tasks, spec.cores_per_task, spec.gpus_per_task)]

    system: dict[str, Any] = {"duration": float(spec.walltime or 0)}
    if spec.environment:
        system["environment"] = dict(spec.environment)
    if spec.cwd:
        system["cwd"] = spec.cwd
    output: dict[str, Any] = {}
    if spec.stdout:
        output["stdout"] = {"type": "file", "path": spec.stdout}
    if spec.stderr:
        output["stderr"] = {"type": "file", "path": spec.stderr}
    if output:
        system["shell"] = {"options": {"output": output}}
    if spec.name:
        system["job"] = {"name": spec.name}

    user: dict[str, Any] = {"group": spec.group}
    for key, value in spec.attributes.items():
        target, _, path = key.partition(".") if key.startswith("system.") else ("", "", key)
        (system if target else user)[path] = value
    extras = {key: getattr(spec, key) for key in _CARRIED_IN_USER}
    extras = {k: v for k, v in extras.items() if v is not None and not (k == "attempt" and v == 1)}
    if extras:
        user[ENSEMBLE_KEY] = extras
    lost += [
        f"{key} (not enforced by Flux jobspec v1)"
        for key in ("memory_mb", "disk_mb")
        if key in extras
    ]
    if spec.attributes.get(BATCH):
        lost.append(
            f"batch (a batch script's body runs once per task here, {spec.tasks} times: "
            "`flux batch` runs it once, see the flux-batch format)"
        )
    if ARRAY in spec.attributes:
        lost.append(f"array={spec.attributes[ARRAY]} (Flux has no job arrays)")

    return Translation(
        document={
            "resources": resources,
            "tasks": [{"command": list(spec.command), "slot": "task", "count": task_count}],
            "attributes": {"system": system, "user": user},
            "version": 1,
        },
        lost=lost,
    )


def _find(resources: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    for resource in resources:
        if resource["type"] == kind:
            return resource
        found = _find(resource.get("with", []), kind)
        if found is not None:
            return found
    return None


def from_flux(jobspec: dict[str, Any]) -> JobSpec:
    """The JobSpec for a Flux jobspec v1 dict (as `JobspecV1.dumps()` writes it)."""
    if jobspec.get("version") != 1:
        raise ValueError(
            f"only Flux jobspec version 1 is supported, not {jobspec.get('version')!r}"
        )
    resources = jobspec["resources"]
    node = _find(resources, "node")
    slot = _find(resources, "slot")
    if slot is None:
        raise ValueError("the jobspec has no 'slot' resource")
    core = _find(slot["with"], "core")
    gpu = _find(slot["with"], "gpu")
    task = jobspec["tasks"][0]
    nodes = node["count"] if node else None
    tasks = task["count"].get("total") or slot["count"] * (nodes or 1)

    return JobSpec(
        command=task["command"],
        nodes=nodes,
        tasks=tasks,
        cores_per_task=core["count"] if core else 1,
        gpus_per_task=gpu["count"] if gpu else 0,
        exclusive=bool(node and node.get("exclusive")),
        **attribute_fields(jobspec.get("attributes", {})),
    )


def attribute_fields(attributes: dict[str, Any]) -> dict[str, Any]:
    """The JobSpec fields a jobspec's `attributes` hold: all but the command and the shape."""
    system = dict(attributes.get("system", {}))
    user = dict(attributes.get("user", {}))
    output = system.pop("shell", {}).get("options", {}).get("output", {})
    extras = user.pop(ENSEMBLE_KEY, {})
    free = {key: value for key, value in user.items() if key != "group"}
    job = system.pop("job", {})
    known = {"duration", "environment", "cwd"}
    free.update({f"system.{key}": value for key, value in system.items() if key not in known})
    return {
        "group": user.get("group", "default"),
        "name": job.get("name"),
        "walltime": system.get("duration") or None,
        "environment": system.get("environment", {}),
        "cwd": system.get("cwd"),
        "stdout": output.get("stdout", {}).get("path"),
        "stderr": output.get("stderr", {}).get("path"),
        "attributes": free,
        **extras,
    }
