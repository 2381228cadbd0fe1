"""Reused task processes, as a warm worker keeps them (the process's side is `warm_child.serve`).

A fork of the worker and the child's exit cost the kernel a few milliseconds, more than a Parsl
no-op app takes. So the in-process tasks of the modules the worker's `reuse` setting names run
in a process forked once and kept while its tasks end cleanly, as Parsl's HTEX runs apps in its
worker processes. Each such process is still a process group of its own that runs one task at a
time, so the worker measures, times out and cancels each task as it does a forked one: a task it
ends takes its process with it, and the next task gets a fresh fork.

The worker talks to each process over a Unix socket pair: the task as JSON, with its standard
streams as file descriptors; one byte back when the task ended cleanly (which says whether it
wrote down modules it learned: `warm_child.LEARNED`), with the result the task
offered (`warm_result`). The worker learns of any other end from the process's pidfd, as it does
for a forked task.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from ensemble_core.members import warm_child, warm_result
from ensemble_core.members.warm_child import Plan
from ensemble_core.members.warm_guard import Guard

#: The longest report of a reused process: its byte and a task's result (one message each).
REPORT_SIZE = 1 + warm_result.LIMIT


class Runner:
    """One reused task process: its pid, the worker's end of its socket, its pidfd, and the
    TMPDIR its tasks get in turn (emptied after each)."""

    def __init__(self, guard: Guard, installed: tuple[str, ...], tmpdir: Path) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = warm_child.fork()
        if pid == 0:
            ours.close()
            warm_child.serve(theirs, guard, installed)
        theirs.close()
        ours.setblocking(False)
        self.tmpdir = str(tmpdir)
        self.pid = pid
        self.channel = ours
        self.pidfd = os.pidfd_open(pid)
        #: The task it runs, if any.
        self.task_id: str | None = None

    def hand(
        self,
        task_id: str,
        plan: Plan,
        changes: dict[str, str],
        cwd: str | None,
        fds: list[int],
        learned: Path,
    ) -> bool:
        """Give it a task; `fds` are the task's stdin, stdout and stderr (the caller's to
        close). False if the task is too large to hand over (nothing was sent); an OSError if
        the process cannot take it (it is gone)."""
        order = {
            "id": task_id,
            "module": plan.module,
            "args": plan.args,
            "options": sorted(plan.options),
            "changes": changes,
            "cwd": cwd,
            "learned": str(learned),
        }
        data = json.dumps(order, separators=(",", ":")).encode()
        if len(data) > warm_child.MAX_ORDER:
            return False
        socket.send_fds(self.channel, [data], fds)
        self.task_id = task_id
        return True

    def report(self) -> bytes | None:
        """What it said: a byte when its task ended cleanly (it then waits for the next),
        `warm_child.LEARNED` if the task wrote down modules it learned, else `CLEAN`, followed
        by the result the task offered (`warm_result`); b"" once it is gone, None when it said
        nothing yet."""
        try:
            return self.channel.recv(REPORT_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def close(self) -> None:
        """After its exit: what the worker held of it, and its TMPDIR."""
        self.channel.close()
        os.close(self.pidfd)
        shutil.rmtree(self.tmpdir, ignore_errors=True)


class Runners:
    """The worker's reused processes: the idle ones, and which tasks may use one."""

    def __init__(
        self,
        guard: Guard,
        installed: tuple[str, ...],
        scratch: Path,
        watch: Callable[[Runner], None],
    ) -> None:
        self.guard = guard
        self.installed = installed
        self.scratch = scratch  # where each process's TMPDIR is made
        self._names = itertools.count(1)
        self.watch = watch  # the worker's: follow a fresh process's reports and exit
        self.modules: frozenset[str] = frozenset()
        self.idle: list[Runner] = []

    @staticmethod
    def available() -> bool:
        """Reuse needs pidfds (Linux 5.3+): without them every task is forked."""
        try:
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError):
            return False
        return True

    def reuses(self, plan: Plan) -> bool:
        return plan.module in self.modules

    def take(self) -> Runner:
        """An idle process, or a fresh one."""
        if self.idle:
            return self.idle.pop()
        tmpdir = self.scratch / f"process-{next(self._names)}"
        os.mkdir(tmpdir)
        try:
            runner = Runner(self.guard, self.installed, tmpdir)
        except OSError:
            os.rmdir(tmpdir)
            raise
        self.watch(runner)
        return runner

    def kill_idle(self) -> None:
        """When the worker ends: its idle processes end too."""
        for runner in self.idle:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.pid, signal.SIGKILL)
        self.idle.clear()
