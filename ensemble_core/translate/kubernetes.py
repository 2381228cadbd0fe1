"""JobSpec <-> Kubernetes `batch/v1` Job: one Pod, one container, run once.

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
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import Translation, documents
from ensemble_core.translate.units import MB, quantity

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
    if spec.walltime is not None and not float(spec.walltime).is_integer():
        lost.append(f"walltime={spec.walltime:g}s exactly (rounded up to whole seconds)")
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


#: What a Job, its Pod and its container may hold that reading carries (or the writer sets).
_JOB_KEYS = {"template", "backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds"}
_POD_KEYS = {"containers", "restartPolicy", "activeDeadlineSeconds"}
_CONTAINER_KEYS = {"name", "image", "command", "args", "resources", "env", "workingDir"}
_GPUS = ("nvidia.com/gpu", "amd.com/gpu")


def from_kubernetes(text: str, source: str = "<kubernetes job>") -> Translation:
    """The JobSpec of a `batch/v1` Job manifest (the file's one Job; other documents, such as
    a ServiceAccount, are skipped): its first container, run once with all its resources."""
    jobs = [
        node
        for node in documents.compose(text, source)
        if documents.keys(node).get("kind") == "Job"
    ]
    if len(jobs) != 1:
        found = "no" if not jobs else str(len(jobs))
        raise ConfigError(f"{source}:1: {found} Kubernetes Jobs (kind: Job): give a file with one")

    def where(path: list[Any]) -> str:
        return f"{source}:{documents.line(jobs[0], path)}"

    try:
        translation = _job(documents.data(jobs[0]), where)
        translation.document = JobSpec(**translation.document)
    except ValidationError as error:
        what = documents.problem(error)[1]
        raise ConfigError(f"{where([])}: the job is not a valid JobSpec: {what}") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None
    except (TypeError, KeyError, AttributeError) as error:
        raise ConfigError(
            f"{where([])}: not a batch/v1 Job as Kubernetes reads it ({error!r})"
        ) from None
    return translation


def _job(job: dict[str, Any], where: Callable[[list[Any]], str]) -> Translation:
    lost: list[str] = []
    spec = job.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        raise ValueError(f"{where(['spec', 'template', 'spec'])}: the Job's Pod has no container")
    container = containers[0]
    path = ["spec", "template", "spec", "containers", 0]
    for key in ("command", "args"):
        if not isinstance(container.get(key) or [], list):
            raise ValueError(f"{where([*path, key])}: {key} is a list of strings")
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    if not container.get("command"):
        raise ValueError(
            f"{where(path)}: the container names no command (it runs its image's entrypoint): "
            "a JobSpec needs the command itself"
        )
    fields: dict[str, Any] = {"command": [str(word) for word in command]}
    fields.update(_identity(job.get("metadata") or {}))
    fields.update(_resources(container.get("resources") or {}, lost, lambda: where(path)))
    environment = {}
    for variable in container.get("env") or []:
        if "value" in variable or "valueFrom" not in variable:
            environment[variable["name"]] = str(variable.get("value", ""))
        else:
            lost.append(f"env {variable['name']} (valueFrom: a JobSpec holds values only)")
    fields["environment"] = environment
    if container.get("workingDir"):
        fields["cwd"] = container["workingDir"]
    deadline = pod.get("activeDeadlineSeconds")
    if deadline is None and spec.get("activeDeadlineSeconds") is not None:
        deadline = spec["activeDeadlineSeconds"]
        lost.append(
            "the Job's activeDeadlineSeconds (it counts time waiting too: read as walltime)"
        )
    if deadline:
        fields["walltime"] = float(deadline)
    if container.get("image"):
        lost.append(f"image {container['image']} (a JobSpec runs on the member's image)")
    for extra in containers[1:]:
        lost.append(f"container {extra.get('name')} (a JobSpec runs one command)")
    if spec.get("backoffLimit", 6) != 0:
        lost.append(
            f"backoffLimit {spec.get('backoffLimit', 6)} (the ensemble's rules decide resubmission)"
        )
    for key in sorted(set(spec) - _JOB_KEYS):
        lost.append(f"spec.{key} (no JobSpec field holds it)")
    for key in sorted(set(pod) - _POD_KEYS):
        lost.append(f"spec.template.spec.{key} (no JobSpec field holds it)")
    for key in sorted(set(container) - _CONTAINER_KEYS):
        lost.append(f"container {key} (no JobSpec field holds it)")
    return Translation(document=fields, lost=lost)


def _identity(metadata: dict[str, Any]) -> dict[str, Any]:
    """Group, name, attempt and attributes, from the labels and annotations the writer sets."""
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    fields: dict[str, Any] = {}
    if GROUP_LABEL in annotations:
        fields["group"] = annotations[GROUP_LABEL]
    if f"{LABEL_PREFIX}/name" in annotations:
        fields["name"] = annotations[f"{LABEL_PREFIX}/name"]
    elif ENSEMBLE_LABEL not in labels and (metadata.get("name") or metadata.get("generateName")):
        fields["name"] = metadata.get("name") or metadata["generateName"].rstrip("-")
    if f"{LABEL_PREFIX}/attributes" in annotations:
        fields["attributes"] = json.loads(annotations[f"{LABEL_PREFIX}/attributes"])
    if str(labels.get(ATTEMPT_LABEL, "")).isdigit():
        fields["attempt"] = int(labels[ATTEMPT_LABEL])
    return fields


def _resources(
    resources: dict[str, Any], lost: list[str], where: Callable[[], str]
) -> dict[str, Any]:
    """The container's limits (its requests where it sets no limits) as a JobSpec's."""
    limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    requests = resources.get("requests") or {}
    for name, value in requests.items():
        if name in (resources.get("limits") or {}) and str(limits[name]) != str(value):
            lost.append(f"request {name}={value} (the limit {limits[name]} is read)")
    fields: dict[str, Any] = {}
    try:
        for name, value in limits.items():
            if name == "cpu":
                cores = quantity(value, "cpu")
                fields["cores_per_task"] = max(math.ceil(cores), 1)
                if cores != fields["cores_per_task"]:
                    lost.append(
                        f"cpu {value} (a JobSpec counts whole cores: {fields['cores_per_task']})"
                    )
            elif name == "memory":
                fields["memory_mb"] = max(math.ceil(quantity(value, "memory") / MB), 1)
            elif name == "ephemeral-storage":
                fields["disk_mb"] = max(math.ceil(quantity(value, "ephemeral-storage") / MB), 1)
            elif name in _GPUS:
                fields["gpus_per_task"] = math.ceil(quantity(value, name))
            else:
                lost.append(f"resource {name}={value} (no JobSpec field holds it)")
    except ValueError as error:
        raise ValueError(f"{where()}: {error}") from None
    return fields
