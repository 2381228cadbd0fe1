"""What runs in a warm task's own process, after its worker forked it.

A task's process is a process group of its own (so the worker can stop and measure one task
without touching the others), known to the worker's guard. An in-process task runs its module as
`python -m` would: argv, environment, working directory and standard streams set up first, the
module run as `__main__`, then what the interpreter does at exit (non-daemon threads joined,
`atexit` run, streams flushed).

A reused process (`serve`, for the modules of the worker's `reuse` setting) runs one task after
another instead of exiting, as the worker processes of Parsl's HTEX do: after each task it puts
back what the task set up (environment, working directory, argv, `sys.path`, standard streams,
`__main__`) and checks that the task left nothing it cannot put back: a task that failed, left
a thread or a process running, registered an exit function, changed a signal handler or grew the
process by `REUSE_GROWTH_MB` ends the process as a forked task would, and the worker forks a
fresh one for the next task.
"""

from __future__ import annotations

import _signal
import atexit
import contextlib
import errno
import importlib.util
import json
import os
import resource
import runpy
import signal
import socket
import sys
import tempfile
import threading
import traceback
import types
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import CodeType
from typing import Any, NoReturn

from ensemble_core.members import warm_result
from ensemble_core.members.warm_guard import Guard

#: A reused process that has grown this much since its fork is replaced after its task, so
#: that memory its tasks freed goes back to the system (and cannot hide a task's use).
REUSE_GROWTH_MB = 64
#: The largest task a reused process receives at once (its environment, its arguments).
MAX_ORDER = 1 << 16
#: A reused process's report that its task ended cleanly (its first byte, then the result):
#: LEARNED when the task wrote down modules it learned, so that its worker looks for that file
#: only then (it would try to open one that is not there after nearly every task).
CLEAN, LEARNED = b"\0", b"\1"
#: Linux's prctl option that makes orphaned descendants this process's children.
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(slots=True)
class Plan:
    """How an in-process task runs: `python [options] -m module args`."""

    module: str
    args: list[str]
    options: frozenset[str]
    #: The module's spec and code, found by the worker (None: the child finds it, as `-m` would).
    main: tuple[ModuleSpec, CodeType] | None = None


#: Module name -> (spec, code, modification time of its file): what `-m` runs, compiled once.
_MAIN_CODE: dict[str, tuple[ModuleSpec, CodeType, int]] = {}


def main_code(module: str) -> tuple[ModuleSpec, CodeType] | None:
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


def fork() -> int:
    """`os.fork`, with the worker's standard streams flushed first: nothing buffered may be
    written twice, by the child too."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return os.fork()


def detach(guard: Guard) -> None:
    """Become a task's process: a group of its own, registered with the guard before anything
    runs, and the signal dispositions a job's process starts with."""
    os.setpgid(0, 0)
    guard.add(os.getpid())
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)


def run_module(
    plan: Plan, changes: dict[str, str], learned_path: str, installed: tuple[str, ...]
) -> int:
    """`python -m module args` in this (forked) process, up to the interpreter's exit; its exit
    status. `changes`: the task's environment over the worker's."""
    known = set(sys.modules)
    _prepare(plan, changes)
    status = _execute(plan)
    _shut_down()
    _note_learned(learned_path, known, installed)
    return status


def serve(channel: socket.socket, guard: Guard, installed: tuple[str, ...]) -> NoReturn:
    """A reused process's life: tasks from `channel` (with their three standard streams), one
    at a time; a zero byte back after each that ended cleanly, followed by the result it
    offered (`warm_result`), else the exit a forked task makes."""
    status = 0
    try:
        detach(guard)
        keep = channel.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        state = _State()
        while True:
            data, fds, _, _ = socket.recv_fds(channel, MAX_ORDER, 3)
            if not data:
                break  # the worker is gone
            status = _serve_one(json.loads(data), fds, state, installed)
            if status is not None:
                break
            _report(channel, warm_result.take(), state.learned)
    except BaseException as error:
        say(f"ensemble: a reused task process failed: {error}\n")
        status = 127
    finally:
        os._exit(status or 0)


def _report(channel: socket.socket, result: bytes, learned: bool) -> None:
    """Tell the worker the task ended cleanly (LEARNED if it wrote the modules it learned,
    else CLEAN), with its result; a result this system's socket buffers cannot take in one
    message goes to the task's file instead."""
    said = LEARNED if learned else CLEAN
    try:
        channel.send(said + result)
    except OSError as error:
        if error.errno != errno.EMSGSIZE or not result:
            raise  # the worker is gone: so is the task, whatever its result
        warm_result.fall_back()
        channel.send(said)


def _serve_one(
    order: dict[str, Any], fds: list[int], state: _State, installed: tuple[str, ...]
) -> int | None:
    """Run one task in the reused process: None if it ended cleanly and the process serves
    the next one, else the exit status the process ends with (after the task's exit)."""
    known = state.modules
    state.learned = False
    for target, fd in enumerate(fds):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    learned_path = order["learned"]
    plan = Plan(order["module"], order["args"], frozenset(order["options"]))
    try:
        if order["cwd"]:
            os.chdir(order["cwd"])
        plan.main = main_code(plan.module)
        _prepare(plan, order["changes"])
    except BaseException as error:
        say(f"ensemble: task {order['id']}: start failed: {error}\n")
        return 127
    warm_result.accept()
    status = _execute(plan)
    if status or not state.kept():
        warm_result.fall_back()  # the process ends: a result offered goes to its file
        _shut_down()
        _note_learned(learned_path, known, installed)
        return status or 0
    _flush()
    if len(sys.modules) != len(known):  # most tasks import nothing new: no set to compare
        state.learned = _note_learned(learned_path, known, installed)
        state.modules = set(sys.modules)
    state.restore(order["changes"])
    return None


class _State:
    """What a reused process puts back after each task, and what it checks was left alone."""

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.raw_environ = _raw_environ()
        #: What the process had imported before its task (tasks report what they add).
        self.modules = set(sys.modules)
        #: Whether the task that just ended wrote down modules it learned (its report says).
        self.learned = False
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.argv = list(sys.argv)
        self.main = sys.modules["__main__"]
        self.streams = (sys.stdin, sys.stdout, sys.stderr)
        self.write_through = [stream.write_through for stream in self.streams[1:]]
        self.tempdir = tempfile.tempdir
        self.dont_write_bytecode = sys.dont_write_bytecode
        self.idle_fds = [os.dup(fd) for fd in range(3)]  # the worker's, between tasks
        self.exit_functions = atexit._ncallbacks()
        self.handlers = _handlers()
        self.peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.reaper = _become_subreaper()

    def kept(self) -> bool:
        """Whether the task left the process fit for the next one."""
        growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.peak_kb
        return (
            self.reaper
            and threading.active_count() == 1
            and atexit._ncallbacks() == self.exit_functions
            and growth_kb < REUSE_GROWTH_MB * 1024
            and _handlers() == self.handlers
            and _no_children()
        )

    def restore(self, changes: dict[str, str]) -> None:
        """Put back what the task set up, as the next task's fork would find it (`changes`:
        what its order set in the environment)."""
        self._restore_environ(changes)
        os.chdir(self.cwd)
        sys.path[:] = self.path
        sys.argv[:] = self.argv
        sys.modules["__main__"] = self.main
        sys.stdin, sys.stdout, sys.stderr = self.streams
        for stream, write_through in zip(self.streams[1:], self.write_through, strict=True):
            if stream.write_through != write_through:
                stream.reconfigure(write_through=write_through)
        tempfile.tempdir = self.tempdir
        sys.dont_write_bytecode = self.dont_write_bytecode
        _flush()
        for target, fd in enumerate(self.idle_fds):
            os.dup2(fd, target, inheritable=True)

    def _restore_environ(self, changes: dict[str, str]) -> None:
        """Put back the names the order set, then compare the whole environment as the
        bytes `os.environ` keeps (one dictionary comparison); only a task that changed other
        names has each name compared and put back, which decodes every one of them (most of
        a reused Parsl task's own cost when done for every task)."""
        for name in changes:
            if name in self.environ:
                os.environ[name] = self.environ[name]
            else:
                os.environ.pop(name, None)
        if self.raw_environ is not None and getattr(os.environ, "_data", None) == self.raw_environ:
            return
        for name in [name for name in os.environ if name not in self.environ]:
            del os.environ[name]
        for name, value in self.environ.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _raw_environ() -> dict[bytes, bytes] | None:
    """A copy of the environment as `os.environ` keeps it, encoded (CPython's `_data`; None
    where there is no such thing: every name is then compared)."""
    raw = getattr(os.environ, "_data", None)
    return dict(raw) if isinstance(raw, dict) else None


#: The signals a task may set a handler for, as numbers.
_CATCHABLE = [
    int(signum)
    for signum in signal.valid_signals()
    if signum not in (signal.SIGKILL, signal.SIGSTOP)
]


def _handlers() -> list[Any]:
    """Every signal's handler. `_signal.getsignal`, not `signal.getsignal`: the same handlers
    without making an enum of each, which took a sixth of a reused process's time per task."""
    return [_signal.getsignal(signum) for signum in _CATCHABLE]


def _become_subreaper() -> bool:
    """Adopt what a task's processes leave behind, so that `_no_children` sees all of it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # not Linux: every task ends its process, as a forked one does


def _no_children() -> bool:
    """No process of the task's is left (the exited ones are reaped)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False


def _prepare(plan: Plan, changes: dict[str, str]) -> None:
    """What `python [options] -m module args` sets up before it runs the module."""
    os.environ.update(changes)
    tempfile.tempdir = None  # read TMPDIR again: the worker's choice was cached
    sys.dont_write_bytecode = sys.dont_write_bytecode or "-B" in plan.options
    if "-u" in plan.options:
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)  # type: ignore[attr-defined]
    if "-P" not in plan.options:
        sys.path.insert(0, os.getcwd())
    sys.argv = [plan.module, *plan.args]


def _execute(plan: Plan) -> int:
    """Run the module as `__main__`; the exit status the interpreter would give."""
    try:
        if plan.main is None:
            runpy.run_module(plan.module, run_name="__main__", alter_sys=True)
        else:
            _run_as_main(*plan.main)
    except SystemExit as exit:
        return _exit_status(exit.code)
    except KeyboardInterrupt:
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as the interpreter ends on an unhandled Ctrl-C
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


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


def _note_learned(path: str, known: set[str], installed: tuple[str, ...]) -> bool:
    """Write the installed modules this task imported, for the worker to import; whether
    there were any (the file is written only then)."""
    names = []
    for name in set(sys.modules) - known:
        origin = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(origin, str) and origin.startswith(installed):
            names.append(name)
    if names:
        with contextlib.suppress(OSError), open(path, "w") as modules:
            modules.write("\n".join(names))
    return bool(names)


def say(text: str) -> None:
    """Write to this process's standard error (the task's), whatever Python's streams are."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode(errors="replace"))
