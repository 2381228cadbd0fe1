"""A batch script as a job group's job: `jobs: [{name: sim, script: run.sbatch}]`.

The script's directives give the job's resources and its body the command, so a script written
for Slurm, PBS, LSF or Flux runs unchanged on any member. The variables such a script reads from
its scheduler (`$SLURM_CPUS_PER_TASK`, `$PBS_O_WORKDIR`, ...) are set to what its directives ask
for. What the JobSpec cannot carry, and what only the script's own scheduler has (its partitions,
accounts, job ids, arrays), is logged as a warning when the file is loaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BANK, BATCH, DEPENDENCIES, QUEUE, formats

log = logging.getLogger(__name__)


def _slurm(spec: JobSpec, name: str, submit_dir: str) -> dict[str, str]:
    nodes = str(spec.nodes or 1)
    return {
        "SLURM_SUBMIT_DIR": submit_dir,
        "SLURM_JOB_NAME": name,
        "SLURM_NTASKS": str(spec.tasks),
        "SLURM_NPROCS": str(spec.tasks),
        "SLURM_CPUS_PER_TASK": str(spec.cores_per_task),
        "SLURM_JOB_NUM_NODES": nodes,
        "SLURM_NNODES": nodes,
    }


def _pbs(spec: JobSpec, name: str, submit_dir: str) -> dict[str, str]:
    return {"PBS_O_WORKDIR": submit_dir, "PBS_JOBNAME": name}


def _lsf(spec: JobSpec, name: str, submit_dir: str) -> dict[str, str]:
    return {"LS_SUBCWD": submit_dir, "LSB_JOBNAME": name, "LSB_DJOB_NUMPROC": str(spec.tasks)}


def _flux(spec: JobSpec, name: str, submit_dir: str) -> dict[str, str]:
    return {}


#: The variables each scheduler gives a batch script that its directives decide.
SCHEDULER_VARIABLES: dict[str, Callable[[JobSpec, str, str], dict[str, str]]] = {
    "slurm": _slurm,
    "pbs": _pbs,
    "lsf": _lsf,
    "flux-batch": _flux,
}


#: Attributes that only mean something to the scheduler a script was written for: its queues
#: and accounts (a Flux script's may be the Flux member's own), job ids and arrays.
_OF_ITS_SCHEDULER = {
    "slurm": (QUEUE, BANK, DEPENDENCIES, ARRAY),
    "pbs": (QUEUE, BANK, DEPENDENCIES, ARRAY),
    "lsf": (QUEUE, BANK, DEPENDENCIES, ARRAY),
    "flux-batch": (DEPENDENCIES, ARRAY),
}


def job_from_script(path: str) -> JobSpec:
    """The JobSpec of one job run by the batch script at `path` (relative to the current
    directory, as sbatch and qsub take it), or a ConfigError naming the file and line."""
    if not os.path.exists(path):
        raise ConfigError(
            f"{path}: no such file (a script's path is taken from the directory ensemble runs "
            f"in, {os.getcwd()}, as sbatch takes it)"
        )
    text = formats.read_file(path)
    dialect = formats.detect(text, path)
    if dialect not in SCHEDULER_VARIABLES:
        raise ConfigError(
            f"{path}:1: a {dialect} document, not a batch script: a job group's `script` is a "
            "Slurm, PBS, LSF or Flux batch script (use `command` for anything else)"
        )
    translation = formats.read(text, path, dialect)
    spec: JobSpec = translation.document
    if spec.attributes.get(BATCH):
        raise ConfigError(
            f"{path}: the body is more than one command and the job has {spec.tasks} tasks: "
            "every task would run the whole body here, where the scheduler runs it once and "
            "starts the tasks itself; put the program on one launcher line (`srun program`, "
            "`flux run program`, `mpiexec -n N program`) or ask for one task"
        )
    for item in translation.lost:
        log.warning("%s: not carried: %s", path, item)
    name = spec.name or os.path.basename(path)
    variables = SCHEDULER_VARIABLES[dialect](spec, name, os.getcwd())
    attributes = dict(spec.attributes)
    for key in _OF_ITS_SCHEDULER[dialect]:
        if key in attributes:
            log.warning(
                "%s: not carried: %s %s (it names what the scheduler the script was written for "
                "has; here the member's own and the ensemble's rules decide)",
                path,
                key.removeprefix("system."),
                json.dumps(attributes.pop(key)),
            )
    environment = {**variables, **spec.environment}
    return spec.model_copy(update={"environment": environment, "attributes": attributes})
