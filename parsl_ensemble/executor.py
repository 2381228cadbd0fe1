"""EnsembleExecutor: every Parsl app call becomes an ensemble job running the lean worker.

The executor only translates: a call becomes a JobSpec whose command is `python -m
parsl_ensemble.worker CALL OUT` (CALL: its slice of a file of calls, `inputs`), and the Future
resolves when the ensemble core reports the job's final outcome from the member's event stream.
Rules (retry-oom, ...) act inside the core, so a task resubmitted with more memory is still one
Parsl try.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import itertools
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
from parsl.errors import ConfigurationError
from parsl.executors.base import ParslExecutor
from parsl.executors.errors import ExecutorError, InvalidResourceSpecification
from parsl.monitoring.radios.base import RadioConfig
from parsl.monitoring.radios.filesystem import FilesystemRadio
from parsl.serialize.errors import SerializationError
from parsl.utils import RepresentationMixin

from ensemble_core.api import open_ensemble, rule_names
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.events import Outcome
from ensemble_core.jobs import JobHandle
from ensemble_core.members.declared import load_members
from ensemble_core.process_ensemble import ProcessEnsemble, open_apart
from ensemble_core.spec import JobSpec
from parsl_ensemble import calls
from parsl_ensemble.arguments import check_arguments
from parsl_ensemble.errors import EnsembleTaskError
from parsl_ensemble.inputs import Inputs
from parsl_ensemble.lifetime import ExitGuard
from parsl_ensemble.resolver import Resolver
from parsl_ensemble.resources import ATTRIBUTE_KEYS, FIELDS, KEYS, job_fields

LOG_TAIL_LINES = 5
#: What warm workers import before their first task: the lean worker's modules.
WARM_PRELOAD = ["parsl_ensemble.worker", "dill", "tblib.pickling_support"]
#: Apps run one after another in a reused process of the worker, as HTEX runs them
#: (`member_settings={"reuse": []}`: a fresh fork per app).
WARM_REUSE = ["parsl_ensemble.worker"]


class TaskFuture(cf.Future):
    """A task's Future; cancelling it cancels the job."""

    def __init__(self, cancel_job: Callable[[], None]) -> None:
        super().__init__()
        self._cancel_job = cancel_job

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            self._cancel_job()
        return cancelled


@dataclass(slots=True)
class _Task:
    id: int
    name: str
    future: TaskFuture
    #: Its files' path without their suffix (a string: pathlib's joins and suffixes were a
    #: tenth of the executor's own work per task).
    base: str
    #: The file its call was appended to (`inputs`).
    calls: Path

    @property
    def out_path(self) -> Path:
        return Path(self.base + ".out")

    @property
    def log_path(self) -> Path:
        return Path(self.base + ".log")


class EnsembleExecutor(ParslExecutor, RepresentationMixin):
    """Run Parsl apps as jobs of an ensemble: local processes, Flux or Kubernetes, with rules.

    Parameters
    ----------
    label: the executor's label in the Parsl config.
    member: the queue: "local" (default), "flux" or "kubernetes".
    rules: rule sets by name ("retry-oom") or path, as for `ensemble run --rules`.
    member_settings: keyword arguments of the member (e.g. `{"cores": 4}` for local).
    working_dir: where task files and job output go; default `<run_dir>/<label>`.
        The worker needs it, the app's cwd and this Python on a file system it shares.
    storage_access: Parsl staging providers (default: Parsl's).
    remote_monitoring_radio: how tasks report to Parsl monitoring (default: the file system).
    worker_command: the argv that runs the worker, before its two file arguments; default this
        Python, `-P -m parsl_ensemble.worker`. Set it where jobs see Python elsewhere (a
        container, another path on the compute nodes).
    workers: run tasks on this many warm workers (long-lived jobs of the member that run each
        task in a process forked from one that has imported the worker, reused from task to
        task as HTEX's are; `member_settings={"reuse": []}` forks one per task) instead of one
        job per task; None (default) is one job per task. Further warm settings
        (`max_workers`, `worker_cores`, `worker_memory_mb`, `idle_seconds`, `address`, ...) go
        in `member_settings` (docs/warm-workers.md).
    members: several members instead of `member` and `member_settings`: a dict of names to
        settings (`{"hpc": {"name": "flux"}, "here": {"name": "local"}}`, or one with
        "members", "default" and "routing") or the path of a YAML file of them; an app's
        resource_specification key `member` names its member, `requires` lists the features
        it needs (docs/several-members.md).
    controller: where the ensemble's controller (its loop, member and rules) runs: "process",
        a process of its own, as HTEX's interchange, so that it and the workflow's threads do
        not take turns at one GIL; "thread", a thread of the workflow's process. Default:
        "process" with warm workers (`workers`, or a member of `members` with them: hundreds
        of tasks a second), else "thread" (no process to start for tens of jobs a second).
    """

    def __init__(
        self,
        label: str = "ensemble",
        member: str = "local",
        rules: Iterable[str] = (),
        member_settings: dict[str, Any] | None = None,
        working_dir: str | None = None,
        storage_access: list[Any] | None = None,
        remote_monitoring_radio: RadioConfig | None = None,
        worker_command: Sequence[str] | None = None,
        workers: int | None = None,
        members: Any = None,
        controller: str | None = None,
    ) -> None:
        check_arguments(
            label,
            member,
            rules,
            member_settings,
            working_dir,
            worker_command,
            workers,
            members,
            controller,
        )
        super().__init__()
        self.label = label
        self.member = member
        self.rules = rules
        self.member_settings = member_settings
        self.working_dir = working_dir
        self.storage_access = storage_access
        self.remote_monitoring_radio = remote_monitoring_radio or FilesystemRadio()
        self.worker_command = worker_command or [
            sys.executable,
            "-P",
            "-m",
            "parsl_ensemble.worker",
        ]
        self.workers = workers
        self.members = members
        self.controller = controller
        self.ensemble: Ensemble | ProcessEnsemble | None = None
        self._tasks: dict[int, _Task] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()
        self._made_dir = Path()
        #: What `_made_dir` was made from (working_dir, run_dir, label, working directory).
        self._made_from: tuple[Any, ...] = ()
        self._results = Resolver(f"{label}-results", self._resolve)
        self._inputs = Inputs()
        self._exit_guard: ExitGuard | None = None

    @property
    def outstanding(self) -> int:
        """Tasks submitted whose Future is not resolved yet."""
        return len(self._tasks)

    def start(self) -> None:
        """Open the ensemble; a bad member or rules file fails `parsl.load` with one clear line."""
        settings = dict(self.member_settings or {})
        if self.workers is not None:
            settings.setdefault("reuse", WARM_REUSE)
            settings.update(workers=self.workers, preload=WARM_PRELOAD)
        try:
            arguments = {"member": self.member, "rules": rule_names(self.rules)}
            arguments.update(member_settings=settings, members=self.members)
            self.ensemble = open_apart(**arguments) if self._apart() else open_ensemble(**arguments)
        except EnsembleError as error:
            raise ConfigurationError(f"EnsembleExecutor '{self.label}': {error}") from error
        self._exit_guard = ExitGuard(self.shutdown)  # SIGTERM or exit: no job, no file left

    def submit(
        self,
        func: Callable[..., Any],
        resource_specification: dict[str, Any] | None,
        *args: Any,
        **kwargs: Any,
    ) -> TaskFuture:
        """Write the call to a file and submit a job running the worker on it."""
        name = getattr(func, "__name__", "task")
        try:
            data = calls.pack(func, args, kwargs)
        except Exception as error:
            raise SerializationError(name) from error
        task_id = next(self._ids)
        cwd = os.getcwd()
        directory = self._directory(cwd)
        base = f"{directory}/task-{task_id}"
        with self._lock:
            if self._closed or self.ensemble is None:
                raise ExecutorError(self, "not running: start() it first, or it was shut down")
            call, calls_file = self._inputs.write(directory, data)
            try:
                spec = self._spec(resource_specification, name, task_id, base, call, cwd)
                handle = self.ensemble.submit(spec)
            except BaseException:
                self._inputs.release(calls_file)
                raise
            cancel = functools.partial(self.ensemble.cancel, handle)
            task = _Task(task_id, name, TaskFuture(cancel), base, calls_file)
            self._tasks[task_id] = task
        task.future.parsl_executor_task_id = task_id  # type: ignore[attr-defined]
        handle.add_done_callback(functools.partial(self._job_done, task))
        return task.future

    def shutdown(self) -> None:
        """Cancel the jobs still running (their Futures fail as cancelled); stop the ensemble."""
        if self._exit_guard is not None:
            self._exit_guard.remove()
        with self._lock:
            self._closed = True
        try:
            if self.ensemble is not None:
                self.ensemble.close()
        finally:
            self._results.shutdown()
            for task in list(self._tasks.values()):  # jobs a stuck member never ended
                self._fail(task, "cancelled", "the executor shut down", [], 1)
            self._inputs.close()
            super().shutdown()

    # Internals ---------------------------------------------------------------------------------

    def _apart(self) -> bool:
        """Whether the controller runs in a process of its own: as `controller` says, else
        when tasks go to warm workers (`workers`, or a member of `members` that has them)."""
        if self.controller is not None:
            return self.controller == "process"
        if self.members is not None:
            declared = load_members(self.members).members.values()
            return any("workers" in member.settings for member in declared)
        return self.workers is not None

    def _spec(
        self,
        resource_specification: dict[str, Any] | None,
        name: str,
        task_id: int,
        base: str,
        call: str,
        cwd: str,
    ) -> JobSpec:
        """The task's job: the worker on its call and result file, with the resources the keys
        ask for."""
        fields, unknown = job_fields(resource_specification)
        for key in unknown:
            if key not in self._warned:
                self._warned.add(key)
                warnings.warn(
                    f"EnsembleExecutor '{self.label}' ignores resource_specification key "
                    f"'{key}'; it knows {', '.join([*KEYS, *ATTRIBUTE_KEYS])}",
                    stacklevel=3,
                )
        fields.setdefault("group", name)
        try:
            return JobSpec(
                command=[*self.worker_command, call, base + ".out"],
                name=f"{self.label}-{task_id}",
                cwd=cwd,
                stdout=base + ".log",
                **fields,
            )
        except pydantic.ValidationError as error:
            found = [
                (FIELDS.get(str(e["loc"][0]), str(e["loc"][0])), e["msg"]) for e in error.errors()
            ]
            problems = "; ".join(f"{key}: {message}" for key, message in found)
            raise InvalidResourceSpecification({key for key, _ in found}, problems) from None

    def _directory(self, cwd: str) -> Path:
        """Where task files go, made when what it is made from changes (a relative
        working_dir is relative to the working directory of each submission)."""
        made_from = (self.working_dir, self.run_dir, self.label, cwd)
        if made_from != self._made_from:
            directory = Path(cwd, self.working_dir or Path(self.run_dir) / self.label)
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dir, self._made_from = directory, made_from
        return self._made_dir

    def _job_done(self, task: _Task, handle: JobHandle) -> None:
        """On the controller's thread: hand the Future's resolution to the results thread.
        A controller apart has its own thread here already, which does nothing else."""
        if isinstance(self.ensemble, ProcessEnsemble):
            self._resolve(task, handle)
        else:
            self._results.put(task, handle)

    def _resolve(self, task: _Task, handle: JobHandle) -> None:
        """Read the worker's result and resolve the Future (off the controller's thread)."""
        attempts = len(handle.attempts)
        if handle.outcome is not Outcome.SUCCESS:
            reason = handle.reason + _tail(task.log_path)
            self._fail(task, str(handle.outcome), reason, handle.log_paths, attempts)
            return
        # A warm worker's reused process sends a small result back with the task's end;
        # otherwise the worker wrote it to the task's file.
        carried = handle.attempts[-1].record.result
        try:
            ok, value = calls.outcome(task.out_path.read_bytes() if carried is None else carried)
        except FileNotFoundError:
            reason = f"the worker wrote no result{_tail(task.log_path)}"
            self._fail(task, "failed", reason, handle.log_paths, attempts)
            return
        except Exception as error:
            error.add_note(f"while reading the result of task {task.id} ({task.name})")
            ok, value = False, error
        # A result carried back from the task's only attempt left no file, and its worker
        # removed the output the task left empty: nothing to look for.
        self._set(task, ok, value, tidy=carried is None or attempts > 1)

    def _fail(self, task: _Task, outcome: str, reason: str, logs: list[str], attempts: int) -> None:
        logs = [path for path in logs if os.path.exists(path) and os.path.getsize(path)]
        label = f"task {task.id} ({task.name})"
        self._set(task, False, EnsembleTaskError(label, outcome, reason, logs, attempts))

    def _set(self, task: _Task, ok: bool, value: Any, tidy: bool = True) -> None:
        """Resolve the Future; remove the task's files but a job output that holds something
        (`tidy`: there may be any)."""
        try:
            if ok:
                task.future.set_result(value)
            else:
                task.future.set_exception(value)
        except cf.InvalidStateError:
            pass  # the Future was cancelled
        finally:
            if self._tasks.pop(task.id, None) is not None:  # its call is released once
                self._inputs.release(task.calls)
            if tidy:
                task.out_path.unlink(missing_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    if not task.log_path.stat().st_size:
                        task.log_path.unlink()


def _tail(path: Path) -> str:
    """The end of the job's output: why a worker died is usually written there."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return ""
    return "".join(f"\n  | {line}" for line in lines)
