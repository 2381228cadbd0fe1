"""JobSpec -> Kubernetes `batch/v1` Job: one Pod, one container, run once.

Kubernetes has no notion of tasks spread over nodes inside one Job, so the command runs once in
one container that gets all the job's cores, GPUs and memory; what that cannot express is lost.
The walltime becomes the Pod's `activeDeadlineSeconds`: like Flux's duration and Slurm's --time it
limits the time the job runs on its node, not the time it waits to be scheduled (a Job-level
deadline would count that too).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ensemble_core.spec import JobSpec
from ensemble_core.translate import Translation

#: The prefix of the labels and annotations the ensemble puts on its Jobs and Pods.
LABEL_PREFIX = "ensemble.flux-framework.org"
ENSEMBLE_LABEL = f"{LABEL_PREFIX}/ensemble"
GROUP_LABEL = f"{LABEL_PREFIX}/group"
ATTEMPT_LABEL = f"{LABEL_PREFIX}/attempt"
#: The name of the one container of every Pod the ensemble creates.
CONTAINER = "job"
#: Seconds a finished Job (and its Pod and log) stays before Kubernetes deletes it.
DEFAULT_TTL_SECONDS = 3600


def label_value(text: str) -> str:
    """`text` as a valid label value: others become '-', at most 63, alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return value.strip("-_.")


def dns_label(text: str, limit: int = 63) -> str:
    """`text` made a DNS-1123 label (lowercase alphanumerics and '-'), as object names must be."""
    value = re.sub(r"[^a-z0-9-]", "-", text.lower())[:limit]
    return value.strip("-") or "job"


def _quantities(spec: JobSpec) -> dict[str, str]:
    quantities = {"cpu": str(spec.total_cores)}
    if spec.memory_mb is not None:
        quantities["memory"] = f"{spec.memory_mb}Mi"
    if spec.disk_mb is not None:
        quantities["ephemeral-storage"] = f"{spec.disk_mb}Mi"
    if spec.total_gpus:
        quantities["nvidia.com/gpu"] = str(spec.total_gpus)
    return quantities


def _lost(spec: JobSpec) -> list[str]:
    lost: list[str] = []
    if spec.nodes is not None and spec.nodes > 1:
        lost.append(f"nodes={spec.nodes} (a Job's Pod runs on one node)")
    if spec.tasks > 1:
        lost.append(
            f"tasks={spec.tasks} as separate processes "
            f"(the command runs once, with all {spec.total_cores} cores)"
        )
    if spec.exclusive:
        lost.append("exclusive (a Pod cannot reserve a whole node)")
    for stream in ("stdout", "stderr"):
        path = getattr(spec, stream)
        if path:
            lost.append(f"{stream}={path} (the container's output goes to the Pod log)")
    return lost


def to_kubernetes(
    spec: JobSpec,
    *,
    image: str,
    namespace: str,
    ensemble_id: str,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    name: str | None = None,
) -> Translation:
    """The `batch/v1` Job dict for a JobSpec; without `name` Kubernetes generates one."""
    labels = {
        ENSEMBLE_LABEL: label_value(ensemble_id),
        GROUP_LABEL: label_value(spec.group),
        ATTEMPT_LABEL: str(spec.attempt),
    }
    annotations = {GROUP_LABEL: spec.group}
    if spec.name:
        annotations[f"{LABEL_PREFIX}/name"] = spec.name
    if spec.attributes:
        annotations[f"{LABEL_PREFIX}/attributes"] = json.dumps(spec.attributes, sort_keys=True)

    metadata: dict[str, Any] = (
        {"name": name} if name else {"generateName": f"{dns_label(spec.name or spec.group, 57)}-"}
    )
    metadata.update(namespace=namespace, labels=labels, annotations=annotations)

    quantities = _quantities(spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": list(spec.command),
        "resources": {"requests": quantities, "limits": dict(quantities)},
    }
    if spec.environment:
        container["env"] = [{"name": k, "value": v} for k, v in spec.environment.items()]
    if spec.cwd:
        container["workingDir"] = spec.cwd

    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if spec.walltime is not None:
        pod_spec["activeDeadlineSeconds"] = math.ceil(spec.walltime)

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
    return Translation(document=job, lost=_lost(spec))
