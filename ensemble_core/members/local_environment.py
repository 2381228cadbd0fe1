"""The environment of the local member's tasks, built at little cost per job.

A task gets this process's environment, the job's own variables, the member's marker (which
lets the reaper find it, `local_lifeline`) and the variables Flux's shell sets. Built as
`{**os.environ, **spec.environment}` and handed to Popen, a hundred variables cost more CPU than
anything else the controller does per job: `os.environ` decodes every name and value and Popen
encodes them again (`os.fsencode`, once per name and once per value). Here the process's
environment is read as bytes, as `os.environ` keeps it, and copied again only when it changed
(one dictionary comparison in C); a task's environment is one copy of that plus its own
variables, in bytes, which Popen passes on as they are.
"""

from __future__ import annotations

import os

from ensemble_core.spec import JobSpec


def process_environment() -> dict[bytes, bytes]:
    """This process's environment as bytes, not copied. On POSIX `os.environ` keeps it encoded
    in `_data` and keeps `_data` equal to the C environment (`os.environb` is the same dict
    behind a view that costs a Python call per entry to read)."""
    return os.environ._data  # type: ignore[attr-defined]


class TaskEnvironment:
    """Builds each task's environment; `fixed` variables (the marker) go into every one."""

    def __init__(self, fixed: dict[str, str]) -> None:
        self._fixed = {os.fsencode(name): os.fsencode(value) for name, value in fixed.items()}
        self._seen: dict[bytes, bytes] | None = None

    def for_job(self, jobid: int, spec: JobSpec) -> dict[bytes, bytes]:
        """The environment of the job's tasks; the caller sets `FLUX_TASK_RANK` per task."""
        now = process_environment()
        if now != self._seen:
            self._seen = dict(now)
        environment = self._seen.copy()
        for name, value in spec.environment.items():
            environment[os.fsencode(name)] = os.fsencode(value)
        environment.update(self._fixed)  # after the job's own: no job leaves the reaper's sight
        environment[b"ENSEMBLE_JOB_ID"] = b"%d" % jobid
        environment[b"ENSEMBLE_GROUP"] = os.fsencode(spec.group)
        environment[b"FLUX_JOB_SIZE"] = b"%d" % spec.tasks
        return environment
