"""One task inside a warm worker: forked from the worker, in a process group of its own.

A task whose command is `python -m MODULE ARGS` of the worker's own Python (optionally with
`-P`, `-B` or `-u`), with no `PYTHON*` variable of its own, runs in the forked child itself: the
child sets up argv, environment, working directory and standard streams as that command would
have had them and runs the module as `__main__` (`runpy`), then exits as the interpreter would
(non-daemon threads joined, `atexit` run, streams flushed). What the worker has imported is
imported already, which is the whole gain: Snakemake's start-up, Parsl's worker, `dill`. Any
other command is executed in the child (fork and exec), as the local member would run it.

The worker learns: an in-process task writes the names of the modules it imported that are
installed (found under the worker's own `sys.path`, never the task's working directory or paths
the task added) to a file the worker reads after the task; the worker imports them itself, so
later tasks find them loaded.

Memory counts as the local member counts it, the resident memory of the task's process group,
but for the forked child itself only its private memory: the pages it still shares with the
worker are the worker's, and a fresh interpreter would not have them either.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import runpy
import shutil
import signal
import sys
import tempfile
import threading
import traceback
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import CodeType
from typing import Any, NoReturn

from ensemble_core.members.proc_memory import resident_memory
from ensemble_core.members.warm_guard import Guard

#: Interpreter options that change nothing an in-process run cannot do as well.
IN_PROCESS_OPTIONS = frozenset({"-P", "-B", "-u"})
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


class TaskError(Exception):
    """The task cannot start (its output cannot be opened): the task fails with this sentence."""


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
class Plan:
    """How an in-process task runs: `python [options] -m module args`."""

    module: str
    args: list[str]
    options: frozenset[str]
    #: The module's spec and code, found by the worker (None: the child finds it, as `-m` would).
    main: tuple[ModuleSpec, CodeType] | None = None


@dataclass(slots=True)
class Running:
    """A started task, as the worker keeps it."""

    order: Order
    pid: int
    in_process: bool
    scratch: Path
    created: list[Path] = field(default_factory=list)

    @property
    def learned_path(self) -> Path:
        return self.scratch / "modules"


def plan(argv: list[str], env: dict[str, str], changes: dict[str, str]) -> Plan | None:
    """The in-process plan for a command, or None to execute it. `env` is the task's whole
    environment, `changes` what it sets over the worker's."""
    found = shutil.which(argv[0], path=env.get("PATH")) if argv else None
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
    return Plan(rest[1], rest[2:], frozenset(options), _main_code(rest[1]))


#: Module name -> (spec, code, modification time of its file): what `-m` runs, compiled once.
_MAIN_CODE: dict[str, tuple[ModuleSpec, CodeType, int]] = {}


def _main_code(module: str) -> tuple[ModuleSpec, CodeType] | None:
    """The spec and code `python -m module` would run, if the worker finds the module on its
    own path (a package runs its `__main__`); kept while the file is unchanged, so a task does
    not compile it again (with PYTHONDONTWRITEBYTECODE there is no cached bytecode)."""
    cached = _MAIN_CODE.get(module)
    try:
        if cached is not None and os.stat(cached[0].origin or "").st_mtime_ns == cached[2]:
            return cached[0], cached[1]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(f"{module}.__main__")
        if spec is None or spec.loader is None or spec.origin is None:
            return None
        code = spec.loader.get_code(spec.name)  # type: ignore[attr-defined]
        if code is None:
            return None
        _MAIN_CODE[module] = (spec, code, os.stat(spec.origin).st_mtime_ns)
        return spec, code
    except Exception:
        return None  # the task's own sys.path may find it: the child looks, as `-m` would


def launch(order: Order, guard: Guard, installed: tuple[str, ...], scratch: Path) -> Running:
    """Open the task's output, fork it and return at once; a TaskError if it cannot start.
    `scratch`, a directory to make, holds the task's TMPDIR."""
    changes = {**order.env, "TMPDIR": str(scratch / "tmp")}
    try:
        os.mkdir(scratch)
        os.mkdir(changes["TMPDIR"])
    except OSError as error:
        raise TaskError(f"the worker could not make the task's TMPDIR: {error}") from None
    env = {**os.environ, **changes}
    in_process = plan(order.argv, env, changes)
    created: list[Path] = []
    running = Running(order, 0, in_process is not None, scratch, created)
    try:
        fds = _open_output(order, created)
    except TaskError:
        finish(running)
        raise
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing buffered may be written twice, by the child too
    try:
        pid = os.fork()
    except OSError as error:
        _close(fds)
        finish(running)
        raise TaskError(f"the worker could not fork the task: {error}") from None
    if pid == 0:
        _child(order, env, changes, in_process, fds, guard, running.learned_path, installed)
    _close(fds)
    running.pid = pid
    return running


def finish(running: Running) -> list[str]:
    """After the task's end: remove its scratch directory and the output files it created and
    left empty; the modules it learned."""
    learned = []
    with contextlib.suppress(OSError):
        learned = running.learned_path.read_text().split()
    try:
        os.rmdir(running.scratch / "tmp")
        os.rmdir(running.scratch)
    except OSError:  # the task left files behind
        shutil.rmtree(running.scratch, ignore_errors=True)
    for path in running.created:
        try:
            if not path.stat().st_size:
                path.unlink()
        except OSError:
            pass
    return learned


def group_memory(groups: dict[int, bool]) -> dict[int, float]:
    """MB in use per process group: the resident memory of its processes, except that a group
    whose leader is a forked (not executed) Python counts the leader's private memory only."""
    used = dict.fromkeys(groups, 0.0)
    for pid, group, resident in resident_memory():
        if group in used:
            forked_leader = groups[group] and pid == group
            used[group] += _private_mb(pid, resident) if forked_leader else resident
    return used


def _private_mb(pid: int, otherwise: float) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            lines = rollup.read().splitlines()
    except OSError:
        return otherwise
    kilobytes = sum(int(line.split()[1]) for line in lines if line.startswith(b"Private_"))
    return kilobytes / 1024


def _open_output(order: Order, created: list[Path]) -> list[int]:
    """stdin, stdout and stderr of the task (appended to; files it creates are noted)."""
    fds = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)]
    paths = [Path(order.stdout)]
    if order.stderr != order.stdout:
        paths.append(Path(order.stderr))
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fds.append(os.open(path, _APPEND | os.O_CREAT | os.O_EXCL, 0o666))
                created.append(path)
            except FileExistsError:
                fds.append(os.open(path, _APPEND))
    except (OSError, ValueError) as error:
        _close(fds)
        reason = getattr(error, "strerror", None) or error
        raise TaskError(f"cannot open the job's output file {path}: {reason}") from None
    return [fds[0], fds[1], fds[-1]]


def _close(fds: Iterable[int]) -> None:
    for fd in set(fds):
        os.close(fd)


def _child(
    order: Order,
    env: dict[str, str],
    changes: dict[str, str],
    in_process: Plan | None,
    fds: list[int],
    guard: Guard,
    learned_path: Path,
    installed: tuple[str, ...],
) -> NoReturn:
    """The forked task: its own group, streams and directory; then exec, or run the module."""
    status = 127
    try:
        os.setpgid(0, 0)
        guard.add(os.getpid())
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target, inheritable=True)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        if order.cwd:
            os.chdir(order.cwd)
        if in_process is None:
            for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)  # as a program started by Popen has them
            os.execvpe(order.argv[0], order.argv, env)
        status = _run_module(in_process, changes, learned_path, installed)
    except BaseException as error:
        _say(f"ensemble: task {order.id}: start failed: {error}\n")
    finally:
        os._exit(status)


def _run_module(
    plan: Plan, changes: dict[str, str], learned_path: Path, installed: tuple[str, ...]
) -> int:
    """`python -m module args`, in this process; its exit status. `changes`: the task's
    environment over the worker's."""
    known = set(sys.modules)
    os.environ.update(changes)
    tempfile.tempdir = None  # read TMPDIR again: the worker's choice was cached
    sys.dont_write_bytecode = sys.dont_write_bytecode or "-B" in plan.options
    if "-u" in plan.options:
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)  # type: ignore[attr-defined]
    if "-P" not in plan.options:
        sys.path.insert(0, os.getcwd())
    sys.argv = [plan.module, *plan.args]
    status = 0
    try:
        if plan.main is None:
            runpy.run_module(plan.module, run_name="__main__", alter_sys=True)
        else:
            _run_as_main(*plan.main)
    except SystemExit as exit:
        status = _exit_status(exit.code)
    except KeyboardInterrupt:
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as the interpreter ends on an unhandled Ctrl-C
    except BaseException:
        traceback.print_exc()
        status = 1
    _shut_down()
    _note_learned(learned_path, known, installed)
    return status


def _run_as_main(spec: ModuleSpec, code: CodeType) -> None:
    """Run a module's code as `__main__`, as `python -m` does."""
    main = types.ModuleType("__main__")
    main.__dict__.update(
        __file__=spec.origin,
        __cached__=None,
        __loader__=spec.loader,
        __package__=spec.parent,
        __spec__=spec,
    )
    sys.modules["__main__"] = main
    sys.argv[0] = spec.origin or sys.argv[0]
    exec(code, main.__dict__)


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _shut_down() -> None:
    """What the interpreter does at exit: wait for non-daemon threads, run atexit, flush."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    try:
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    _flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def _note_learned(path: Path, known: set[str], installed: tuple[str, ...]) -> None:
    """Write the installed modules this task imported, for the worker to import."""
    names = []
    for name in set(sys.modules) - known:
        origin = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(origin, str) and origin.startswith(installed):
            names.append(name)
    if names:
        with contextlib.suppress(OSError):
            path.write_text("\n".join(names))


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="replace"))
