"""One task inside a warm worker: forked from the worker, in a process group of its own.

A task whose command is `python -m MODULE ARGS` of the worker's own Python (optionally with
`-P`, `-B` or `-u`), with no `PYTHON*` variable of its own, runs in the forked child itself
(`warm_child`): what the worker has imported is imported already, which is the whole gain:
Snakemake's start-up, Parsl's worker, `dill`. Any other command is executed in the child (fork
and exec), as the local member would run it. The in-process tasks of the modules the worker may
reuse a process for run in a reused one instead of a fresh fork (`warm_runner`).

The worker learns: an in-process task writes the names of the modules it imported that are
installed (found under the worker's own `sys.path`, never the task's working directory or paths
the task added) to a file the worker reads after the task; the worker imports them itself, so
later tasks find them loaded.

Memory counts as the local member counts it, the resident memory of the task's process group,
but for the forked child itself only its private memory: the pages it still shares with the
worker are the worker's, and a fresh interpreter would not have them either. In a reused process
that is what its private memory grew by since the task started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ensemble_core.members import warm_child
from ensemble_core.members.proc_memory import resident_memory
from ensemble_core.members.warm_child import Plan
from ensemble_core.members.warm_guard import Guard
from ensemble_core.members.warm_output import Outputs, TaskError
from ensemble_core.members.warm_runner import Runner, Runners

#: Interpreter options that change nothing an in-process run cannot do as well.
IN_PROCESS_OPTIONS = frozenset({"-P", "-B", "-u"})


@dataclass(slots=True)
class Order:
    """A task as the member sends it."""

    id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    stdout: str
    stderr: str
    walltime: float | None = None
    memory_mb: int | None = None
    cores: int = 1
    gpus: int = 0

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Order:
        return cls(
            id=str(message["id"]),
            argv=[str(word) for word in message["argv"]],
            env={str(k): str(v) for k, v in message.get("env", {}).items()},
            cwd=message.get("cwd"),
            stdout=str(message["stdout"]),
            stderr=str(message.get("stderr") or message["stdout"]),
            walltime=message.get("walltime"),
            memory_mb=message.get("memory_mb"),
            cores=int(message.get("cores", 1)),
            gpus=int(message.get("gpus", 0)),
        )


@dataclass(slots=True)
class Running:
    """A started task, as the worker keeps it."""

    order: Order
    pid: int
    #: What of its process's private memory is not the task's (None: an executed command,
    #: whose whole resident memory counts).
    baseline_mb: float | None
    #: Its TMPDIR, and where it writes the modules it learned (strings, as the task's other
    #: paths: pathlib's joins were a quarter of a worker's own work per reused task).
    tmpdir: str
    learned_path: str
    created: list[str] = field(default_factory=list)
    #: The reused process it runs in (None: a process of its own).
    runner: Runner | None = None
    #: Set by `finish`: the task left its output files empty and they were removed (its
    #: member need not look for them).
    outputs_gone: bool = False


def plan(argv: list[str], changes: dict[str, str]) -> Plan | None:
    """The in-process plan for a command, or None to execute it. `changes`: what the task's
    environment sets over the worker's."""
    if not argv:
        return None
    # The worker's own interpreter by its own path (what front doors write) needs no search.
    if argv[0] != sys.executable:
        found = _which(argv[0], changes)
        if found is None or os.path.abspath(found) != os.path.abspath(sys.executable):
            return None
    options = []
    rest = argv[1:]
    while rest and rest[0] in IN_PROCESS_OPTIONS:
        options.append(rest.pop(0))
    if len(rest) < 2 or rest[0] != "-m" or not rest[1] or rest[1].startswith("-"):
        return None
    for name, value in changes.items():
        if name.startswith("PYTHON") and os.environ.get(name) != value:
            return None  # read at interpreter start-up: a fork cannot honour it
    # Its code is found for a fork only (`_fork`): a reused process finds its own.
    return Plan(rest[1], rest[2:], frozenset(options))


def _which(command: str, changes: dict[str, str]) -> str | None:
    return shutil.which(command, path=changes.get("PATH", os.environ.get("PATH")))


def launch(
    order: Order,
    guard: Guard,
    installed: tuple[str, ...],
    scratch: str,
    runners: Runners | None,
    outputs: Outputs,
) -> Running:
    """Open the task's output, hand it to a reused process or fork it, and return at once; a
    TaskError if it cannot start. `scratch`: a path of the task's own in the worker's scratch
    directory, for its TMPDIR (unless a reused process lends it its own) and what it learns."""
    in_process = plan(order.argv, order.env)
    learned = f"{scratch}.modules"
    running = Running(order, 0, None if in_process is None else 0.0, scratch, learned)
    try:
        fds = outputs.open(order.stdout, order.stderr, running.created)
    except TaskError:
        finish(running, outputs)
        raise
    try:
        handed = (
            runners is not None
            and in_process is not None
            and runners.reuses(in_process)
            and _hand(running, runners, in_process, fds)
        )
        if not handed:
            running.pid = _fork(order, in_process, fds, guard, running, installed)
    except (OSError, TaskError) as error:
        finish(running, outputs)
        if isinstance(error, TaskError):
            raise
        raise TaskError(f"the worker could not start the task: {error}") from None
    finally:
        outputs.close(fds)
    return running


def _fork(
    order: Order,
    in_process: Plan | None,
    fds: list[int],
    guard: Guard,
    running: Running,
    installed: tuple[str, ...],
) -> int:
    """Fork the task, with a TMPDIR of its own."""
    try:
        os.mkdir(running.tmpdir)
    except OSError as error:
        raise TaskError(f"the worker could not make the task's TMPDIR: {error}") from None
    changes = {**order.env, "TMPDIR": running.tmpdir}
    env = {**os.environ, **changes}  # the whole environment, made only for a fork
    if in_process is not None:  # compiled once per worker, inherited by every fork
        in_process.main = warm_child.main_code(in_process.module)
    pid = warm_child.fork()
    if pid == 0:
        _child(order, env, changes, in_process, fds, guard, running.learned_path, installed)
    return pid


def _hand(running: Running, runners: Runners, plan: Plan, fds: list[int]) -> bool:
    """Run the task in a reused process, with the process's TMPDIR: its memory counts from
    what the process holds now. False if the process cannot take it (the task is too large
    to hand over, or the process just ended): the task is forked instead."""
    runner = runners.take()
    order = running.order
    baseline = _private_mb(runner.pid, 0.0) if order.memory_mb else 0.0
    changes = {**order.env, "TMPDIR": runner.tmpdir}
    try:
        if not runner.hand(order.id, plan, changes, order.cwd, fds, running.learned_path):
            runners.idle.append(runner)
            return False
    except OSError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(runner.pid, signal.SIGKILL)  # the worker reaps it from its pidfd
        return False
    running.runner, running.pid, running.tmpdir = runner, runner.pid, runner.tmpdir
    running.baseline_mb = baseline
    return True


def finish(running: Running, outputs: Outputs, learned: bool = True) -> list[str]:
    """After the task's end: remove its TMPDIR (empty a reused process's for its next task)
    and the output files it created and left empty (`outputs_gone` if that was all of them);
    the modules it learned (looked for unless its reused process said it wrote none)."""
    modules_learned = []
    if learned:
        with contextlib.suppress(OSError):
            with open(running.learned_path) as modules:
                modules_learned = modules.read().split()
            os.unlink(running.learned_path)
    if running.runner is not None:
        _empty(running.tmpdir)
    else:
        try:
            os.rmdir(running.tmpdir)
        except FileNotFoundError:
            pass
        except OSError:  # the task left files behind
            shutil.rmtree(running.tmpdir, ignore_errors=True)
    order = running.order
    running.outputs_gone = outputs.tidy(running.created) == len({order.stdout, order.stderr})
    return modules_learned


def _empty(directory: str) -> None:
    """Remove what a task left in a directory (made again if the task removed it)."""
    try:
        with os.scandir(directory) as scan:
            left = list(scan)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            os.makedirs(directory)
        return
    for entry in left:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def group_memory(groups: dict[int, float | None]) -> dict[int, float]:
    """MB in use per process group: the resident memory of its processes, except that a group
    whose leader is a forked (not executed) Python counts what the leader's private memory
    holds beyond the baseline given for it."""
    used = dict.fromkeys(groups, 0.0)
    for pid, group, resident in resident_memory():
        if group in used:
            baseline = groups[group]
            if baseline is not None and pid == group:
                used[group] += max(0.0, _private_mb(pid, resident) - baseline)
            else:
                used[group] += resident
    return used


def _private_mb(pid: int, otherwise: float) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            lines = rollup.read().splitlines()
    except OSError:
        return otherwise
    kilobytes = sum(int(line.split()[1]) for line in lines if line.startswith(b"Private_"))
    return kilobytes / 1024


def _child(
    order: Order,
    env: dict[str, str],
    changes: dict[str, str],
    in_process: Plan | None,
    fds: list[int],
    guard: Guard,
    learned_path: str,
    installed: tuple[str, ...],
) -> NoReturn:
    """The forked task: its own group, streams and directory; then exec, or run the module."""
    status = 127
    try:
        warm_child.detach(guard)
        for target, fd in enumerate(fds):
            os.dup2(fd, target, inheritable=True)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        if order.cwd:
            os.chdir(order.cwd)
        if in_process is None:
            for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)  # as a program started by Popen has them
            os.execvpe(order.argv[0], order.argv, env)
        status = warm_child.run_module(in_process, changes, learned_path, installed)
    except BaseException as error:
        warm_child.say(f"ensemble: task {order.id}: start failed: {error}\n")
    finally:
        os._exit(status)
