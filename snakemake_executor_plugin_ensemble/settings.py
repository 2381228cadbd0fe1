"""The `--ensemble-*` flags and the member settings they turn into.

No `from __future__ import annotations` here: Snakemake reads the dataclass field types at run time
to build its argument parser.
"""

from dataclasses import dataclass, field, fields
from typing import Any

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from ensemble_core import bounds
from ensemble_core.members import MEMBERS

#: Where the jobs' logs go (the plugin names one file per job; the local member's log_dir).
LOG_DIR = ".snakemake/ensemble_logs"

#: The flags that are not member settings; every other field is one (`--ensemble-cores` is the
#: local member's `cores`), and the member it belongs to is read from the members themselves.
FRONT_DOOR_FIELDS = (
    "member",
    "rules",
    "memory_overhead_mb",
    "report",
    "members",
    "state",
    "detach",
    "fresh",
)
#: Where the ensemble of a workflow is recorded unless --ensemble-state says otherwise.
STATE_DIR = ".snakemake/ensemble-state"
#: What warm workers import before the first job: Snakemake's command line and API, and what
#: every job imports as it runs (Snakemake's source cache opens the Snakefile through
#: smart_open, which imports its clients of every protocol: a tenth of a second). The rest of
#: what a job imports they learn from the first one.
WARM_PRELOAD = [
    "snakemake_executor_plugin_ensemble.job",
    "snakemake.api",
    "snakemake.workflow",
    "snakemake.report",
    "smart_open",
    "graphlib",
]
#: `--ensemble-memory-overhead-mb`: 0 or more, at most a terabyte.
MEMORY_OVERHEAD = bounds.Bound(0, 1_000_000, whole=True)


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
    report: str | None = _optional(
        str,
        "FILE",
        "write an HTML report of the ensemble's jobs, rules and member to FILE when the "
        "workflow ends: one file that opens offline (docs/status-and-report.md).",
    )
    state: str | None = _optional(
        str,
        "DIR",
        "where the ensemble is recorded, so that a run killed or detached is resumed by the "
        f"same command: its jobs still on the queue are followed, not submitted again "
        f"(default: {STATE_DIR}; docs/detach-and-resume.md).",
    )
    detach: bool = field(
        default=False,
        metadata={
            "help": "on exit (the workflow's end or Ctrl-C) leave the jobs that still run on the "
            "queue (Flux, Kubernetes) instead of cancelling them; the next run of the same "
            "command follows them (docs/detach-and-resume.md).",
        },
    )
    fresh: bool = field(
        default=False,
        metadata={"help": "start the ensemble anew, ignoring an unfinished one recorded."},
    )
    members: str | None = _optional(
        str,
        "FILE",
        "Several members instead of --ensemble-member: a YAML file with members: (each "
        "member's settings by name), default: and routing:, as an ensemble file declares them. "
        "A rule's resource ensemble_member names its member, ensemble_requires the features it "
        "needs; the others are matched (docs/several-members.md).",
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
    workers: int | None = _optional(
        int,
        "N",
        "warm workers (any member): run jobs on N long-lived workers that fork each job's "
        "Snakemake from one that has imported it, instead of one queue job per job (pays for "
        "many jobs shorter than a few seconds; docs/warm-workers.md). Default: off.",
    )
    max_workers: int | None = _optional(
        int,
        "N",
        "warm workers: the most workers grow rules may reach (default: --ensemble-workers).",
    )
    worker_cores: int | None = _optional(
        int, "N", "warm workers: cores of each worker; larger jobs run as queue jobs (default: 1)."
    )
    worker_memory_mb: int | None = _optional(
        int,
        "MB",
        "warm workers: memory of each worker; jobs with a larger mem_mb run as queue jobs "
        "(default: none asked for).",
    )
    idle_seconds: float | None = _optional(
        float, "S", "warm workers: an idle worker leaves after this long (default: 60)."
    )
    address: str | None = _optional(
        str,
        "HOST",
        "warm workers: the address workers connect back to (default: loopback for the local "
        "member, else this host's address).",
    )


def member_settings(settings: ExecutorSettings) -> dict[str, Any]:
    """Every flag checked, then the settings of the chosen member: a flag out of range, or one
    of another member, is a WorkflowError naming it, in the words `ensemble run` uses."""
    # Here, not at the top: every job's Snakemake imports this module (executor.py says why).
    from ensemble_core.members.settings import SettingError, check_settings

    problem = MEMORY_OVERHEAD.problem(settings.memory_overhead_mb)
    if problem:
        raise WorkflowError(f"{_flag('memory_overhead_mb')}: {problem}")
    chosen = {
        setting.name: getattr(settings, setting.name)
        for setting in fields(settings)
        if setting.name not in FRONT_DOOR_FIELDS and getattr(settings, setting.name) is not None
    }
    if settings.members is not None and chosen:
        raise WorkflowError(
            f"{_flag(next(iter(chosen)))}: with --ensemble-members, each member's settings go in "
            "its entry of the members file"
        )
    if settings.members is not None:
        return {}
    if settings.member == "local":
        chosen.setdefault("log_dir", LOG_DIR)
    if settings.workers is not None:
        chosen["preload"] = WARM_PRELOAD
    try:
        return check_settings(settings.member, chosen)
    except SettingError as error:
        name = _flag(error.setting) if error.setting != "log_dir" else "the job log directory"
        raise WorkflowError(error.phrased(name, "--ensemble-member {}")) from None


def _flag(name: str) -> str:
    return "--ensemble-" + name.replace("_", "-")
