"""JobSpec -> Slurm batch script (`sbatch`), for sites whose queue is Slurm.

Slurm's --mem and --tmp count per node while a JobSpec's memory and disk count for the whole job,
so they are divided over the nodes (rounded up); with no node count and several tasks the memory
becomes --mem-per-cpu instead, which Slurm holds to whatever nodes it picks. The environment is set
with `export` lines, because `--export=NAME=value` cannot carry a value that holds a comma.
"""

from __future__ import annotations

import math
import re
import shlex

from ensemble_core.spec import JobSpec
from ensemble_core.translate import Translation

_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's `[days-]hours:minutes:seconds`, rounded up to the second."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _directive(option: str, value: object | None = None) -> str:
    if value is None:
        return f"#SBATCH --{option}"
    text = str(value)
    if any(char.isspace() for char in text):
        text = f'"{text}"'
    return f"#SBATCH --{option}={text}"


def _filename(path: str) -> str:
    """Slurm expands %j and the like in --output/--error; '%%' keeps a literal '%'."""
    return path.replace("%", "%%")


def to_slurm(spec: JobSpec) -> Translation:
    """The sbatch script for a JobSpec, with what Slurm cannot take listed as lost."""
    lost: list[str] = []
    per_node = spec.nodes or 1
    lines = ["#!/bin/bash", _directive("job-name", spec.name or spec.group)]
    if spec.name:
        lost.append(f"group={spec.group} (a Slurm job has one name; it holds the job's name)")
    if spec.nodes is not None:
        lines.append(_directive("nodes", spec.nodes))
    lines.append(_directive("ntasks", spec.tasks))
    lines.append(_directive("cpus-per-task", spec.cores_per_task))
    if spec.gpus_per_task:
        lines.append(_directive("gpus-per-task", spec.gpus_per_task))
    if spec.exclusive:
        lines.append(_directive("exclusive"))
    if spec.memory_mb is not None:
        if spec.nodes is None and spec.tasks > 1:
            mem = math.ceil(spec.memory_mb / spec.total_cores)
            lines.append(_directive("mem-per-cpu", f"{mem}M"))
        else:
            lines.append(_directive("mem", f"{math.ceil(spec.memory_mb / per_node)}M"))
    if spec.disk_mb is not None:
        lines.append(_directive("tmp", f"{math.ceil(spec.disk_mb / per_node)}M"))
    if spec.walltime is not None:
        lines.append(_directive("time", slurm_time(spec.walltime)))
    if spec.cwd:
        lines.append(_directive("chdir", spec.cwd))
    if spec.stdout:
        lines.append(_directive("output", _filename(spec.stdout)))
    if spec.stderr:
        lines.append(_directive("error", _filename(spec.stderr)))
    if spec.attributes:
        lost.append(f"attributes {sorted(spec.attributes)} (Slurm has no free job attributes)")

    body = [""]
    for name, value in spec.environment.items():
        if _SHELL_NAME.match(name):
            body.append(f"export {name}={shlex.quote(value)}")
        else:
            lost.append(f"environment variable {name!r} (not a valid shell variable name)")
    # Since Slurm 22.05 srun does not take --cpus-per-task from sbatch: repeat it.
    body.append(f"srun --cpus-per-task={spec.cores_per_task} {shlex.join(spec.command)}")
    return Translation(document="\n".join(lines + body) + "\n", lost=lost)
