"""The `--ensemble-*` flags and the member settings they turn into.

No `from __future__ import annotations` here: Snakemake reads the dataclass field types at run time
to build its argument parser.
"""

from dataclasses import dataclass, field, fields
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from ensemble_core.members import MEMBERS

#: Where the jobs' logs go (the plugin names one file per job; the local member's log_dir).
LOG_DIR = ".snakemake/ensemble_logs"

#: Which member each member-specific flag belongs to (the flag name is the member's setting).
MEMBER_OF_SETTING = {
    "cores": "local",
    "memory_mb": "local",
    "gpus": "local",
    "max_nodes": "local",
    "flux_uri": "flux",
    "namespace": "kubernetes",
    "image": "kubernetes",
    "kubeconfig": "kubernetes",
    "context": "kubernetes",
    "minicluster": "kubernetes",
}


def _optional(kind: type, metavar: str, help: str) -> Any:
    """A flag that is unset by default; `type` is explicit because Snakemake's parser does not
    read `int | None`."""
    return field(default=None, metadata={"help": help, "metavar": metavar, "type": kind})


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    member: str = field(
        default="local",
        metadata={
            "help": "The queue the ensemble submits to: local (processes on this machine), "
            "flux (the Flux instance this runs in, or --ensemble-flux-uri) or kubernetes. "
            "Default: local.",
            "choices": list(MEMBERS),
            "metavar": "{" + ",".join(MEMBERS) + "}",
        },
    )
    rules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Rules files (YAML) the ensemble applies to the workflow's jobs, by path or "
            "by the name of a shared rule set (retry-oom, retry-timeout, grow-on-backlog). "
            "Takes several values: --ensemble-rules retry-oom my-rules.yaml.",
            "nargs": "+",
            "metavar": "FILE_OR_NAME",
        },
    )
    memory_overhead_mb: int = field(
        default=200,
        metadata={
            "help": "MB added to each job's mem_mb for the Snakemake process that runs the job "
            "inside its allocation (about 100 MB), which the member's memory limit counts too: "
            "mem_mb stays what the rule's own command may use. 0 makes mem_mb the whole limit. "
            "Default: 200.",
            "metavar": "MB",
        },
    )
    cores: int | None = _optional(
        int, "N", "local member: cores per node (default: all cores of this machine)."
    )
    memory_mb: int | None = _optional(
        int, "MB", "local member: memory per node in MB (default: all memory of this machine)."
    )
    gpus: int | None = _optional(int, "N", "local member: GPUs per node (default: 0).")
    max_nodes: int | None = _optional(
        int, "N", "local member: the number of nodes grow rules may reach (default: 1)."
    )
    flux_uri: str | None = _optional(
        str,
        "URI",
        "flux member: the URI of the Flux instance (default: the enclosing one, from FLUX_URI).",
    )
    namespace: str | None = _optional(str, "NAME", "kubernetes member: the namespace of the Jobs.")
    image: str | None = _optional(
        str,
        "IMAGE",
        "kubernetes member: the container image jobs run in; it needs Snakemake and the "
        "workflow's software.",
    )
    kubeconfig: str | None = _optional(
        str,
        "FILE",
        "kubernetes member: the kubeconfig file (default: in-cluster config, then ~/.kube/config).",
    )

    context: str | None = _optional(
        str, "NAME", "kubernetes member: the kubeconfig context (default: its current one)."
    )
    minicluster: str | None = _optional(
        str,
        "NAME",
        "kubernetes member: the Flux Operator MiniCluster that grow and shrink rules resize.",
    )


def member_settings(settings: ExecutorSettings) -> dict[str, Any]:
    """The settings given for the chosen member; a flag of another member is an error."""
    chosen: dict[str, Any] = {"log_dir": LOG_DIR} if settings.member == "local" else {}
    for setting in fields(settings):
        member = MEMBER_OF_SETTING.get(setting.name)
        value = getattr(settings, setting.name)
        if member is None or value is None:
            continue
        if member != settings.member:
            flag = "--ensemble-" + setting.name.replace("_", "-")
            raise WorkflowError(
                f"{flag} is a setting of the {member} member, but the member is "
                f"'{settings.member}': drop it or add --ensemble-member {member}"
            )
        chosen[setting.name] = value
    return chosen
