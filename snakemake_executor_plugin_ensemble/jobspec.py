"""A Snakemake job as a JobSpec: the spawned `snakemake` command and the job's resources."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from ensemble_core import bounds
from ensemble_core.matching import MEMBER_ATTRIBUTE, REQUIRES_ATTRIBUTE
from ensemble_core.spec import JobSpec

#: Resources that choose a member, with several (`--ensemble-members`): the attribute each sets.
MEMBER_RESOURCES = {"ensemble_member": MEMBER_ATTRIBUTE, "ensemble_requires": REQUIRES_ATTRIBUTE}

#: Rank 0 runs the job; the other ranks only hold their share of the allocation until it ends,
#: as a batch script runs once on the first node of a Slurm or Flux allocation.
RANK_ZERO_ONLY = 'if [ "${{FLUX_TASK_RANK:-0}}" = 0 ]; then {command}; fi'
#: The job gets a temporary directory of its own (TMPDIR), removed when the job ends however it
#: ends: a cancelled job's Snakemake dies of SIGTERM and cannot remove the one it made itself.
#: The shell waits for the job in the background: a shell runs a trap only once its foreground
#: command has ended, and a Snakemake told to end may take longer than the grace before
#: SIGKILL (2 s on the local member, under load), which left its TMPDIR behind.
OWN_TMPDIR = (
    'if d="$(mktemp -d 2>/dev/null)"; then export TMPDIR="$d"; '
    "trap 'rm -rf \"$d\"' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; fi; "
    "( {command} ) & wait $!"
)


def job_spec(
    job: JobExecutorInterface,
    command: str,
    cwd: str,
    log_file: str,
    memory_overhead_mb: int = 0,
) -> JobSpec:
    """Translate one Snakemake job (or group job); raises ValueError for impossible resources.

    `memory_overhead_mb` is added to mem_mb for the spawned Snakemake that runs the job.
    """
    resources = job.resources
    memory = _positive(resources, "mem_mb")
    tasks = _positive(resources, "tasks") or 1
    cores = _positive(resources, "cpus_per_task") or _positive(resources, "_cores") or 1
    gpus = _positive(resources, "gpu") or _positive(resources, "gpus") or 0
    runtime = _positive(resources, "runtime")
    command = OWN_TMPDIR.format(command=command)
    if tasks > 1:
        command = RANK_ZERO_ONLY.format(command=command)
    return JobSpec(
        command=["/bin/sh", "-c", command],
        group=job.name,
        name=f"{job.name}.{job.jobid}",
        nodes=_positive(resources, "nodes"),
        tasks=tasks,
        cores_per_task=cores,
        gpus_per_task=math.ceil(gpus / tasks),
        memory_mb=memory + memory_overhead_mb if memory else None,
        disk_mb=_positive(resources, "disk_mb"),
        walltime=runtime * 60 if runtime else None,
        cwd=cwd,
        stdout=log_file,
        attributes={
            "snakemake_jobid": str(job.jobid),
            "snakemake_attempt": job.attempt,
            "snakemake_rules": sorted(job.rules),
            **{
                attribute: resources[name]
                for name, attribute in MEMBER_RESOURCES.items()
                if isinstance(resources.get(name), str) and resources[name]
            },
        },
    )


#: The range of each resource this reads (0 means unset), in Snakemake's units.
RESOURCE_BOUNDS = {
    "mem_mb": bounds.Bound(0, bounds.MEGABYTES.high),
    "disk_mb": bounds.Bound(0, bounds.MEGABYTES.high),
    "runtime": bounds.Bound(0, bounds.DURATION.high / 60),
    "tasks": bounds.Bound(0, bounds.TASKS.high),
    "nodes": bounds.Bound(0, bounds.NODES.high),
    "cpus_per_task": bounds.Bound(0, bounds.CORES.high),
    "_cores": bounds.Bound(0, bounds.CORES.high),
    "gpu": bounds.Bound(0, bounds.GPUS.high),
    "gpus": bounds.Bound(0, bounds.GPUS.high),
}


def job_identity(job: JobExecutorInterface) -> str:
    """What names a Snakemake job across runs: its rule and its output files. A run that
    schedules it again (after Snakemake was killed or detached) finds the job still running."""
    return f"{job.name}:{','.join(sorted(str(path) for path in job.output))}"


def _positive(resources: Mapping[str, Any], name: str) -> int | None:
    """A numeric resource, or None where Snakemake leaves it unset, zero or symbolic; a
    ValueError for a negative, infinite or absurd one (it would run with no limit)."""
    value = resources.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    problem = RESOURCE_BOUNDS[name].problem(value)
    if problem:
        raise ValueError(f"resource {name}={value}: {problem}")
    return math.ceil(value) if value > 0 else None
