"""A warm worker: a long-lived process, itself a job of a member, that runs the tasks its warm
member sends, each in a child forked from it (`warm_task`).

Started as `python -P -m ensemble_core.members.warm_worker` with the member's address, the
worker's name and the run's secret in its environment (`warm_protocol`). It forks its guard
first (`warm_guard`), connects back, proves it knows the secret, and then serves: one thread, one
selector over the connection and each task's pidfd, and timers for walltimes, memory samples and
the grace period between SIGTERM and SIGKILL. It reports each task in the core's vocabulary, as
the local member would report the same command: `start` when forked, `exception` (`timeout`,
`oom`, `cancel`) when it ends one, `done` with the wait status when the task's process has exited
(with the result a reused process sent back for it, `warm_result`).

When the connection ends (the member closed, or is gone) or the worker is told to stop or gets
SIGTERM, it kills what still runs and exits; should it die without that chance, its guard kills
the tasks.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import heapq
import importlib
import itertools
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_core.members import warm_child, warm_task
from ensemble_core.members.warm_guard import Guard
from ensemble_core.members.warm_output import Outputs, TaskError
from ensemble_core.members.warm_protocol import (
    ADDRESS_ENV,
    MAX_LINE,
    NAME_ENV,
    SECRET_ENV,
    encode,
    proof,
)
from ensemble_core.members.warm_runner import Runner, Runners
from ensemble_core.members.warm_task import Order, Running

#: Between SIGTERM and SIGKILL when a task is ended (as the local member's default).
GRACE_SECONDS = 2.0
MEMORY_CHECK_SECONDS = 0.1
#: Without pidfds (not Linux 5.3+), how often exits are looked for.
EXIT_POLL_SECONDS = 0.02
CONNECT_SECONDS = 30.0
#: The most read from the member at once. A read of 1 MiB was a fresh mapping of memory each
#: time (three system calls a task: the allocator maps a block that large for each request).
RECEIVE_SIZE = 1 << 16


class Stopped(Exception):
    """The worker is to end now, with this exit status: SIGTERM, or its member is gone."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class Room:
    """What of the worker's job is free for tasks (the member places them; this orders them)."""

    cores: int
    memory_mb: int | None
    gpus: int

    def fits(self, order: Order) -> bool:
        return (
            order.cores <= self.cores
            and order.gpus <= self.gpus
            and (self.memory_mb is None or (order.memory_mb or 0) <= self.memory_mb)
        )

    def take(self, order: Order, sign: int) -> None:
        self.cores -= sign * order.cores
        self.gpus -= sign * order.gpus
        if self.memory_mb is not None:
            self.memory_mb -= sign * (order.memory_mb or 0)


class Worker:
    """Serves one connection until told to stop."""

    def __init__(self, connection: socket.socket, guard: Guard, name: str) -> None:
        self.connection = connection
        self.guard = guard
        self.name = name
        self.selector = selectors.DefaultSelector()
        self.selector.register(connection, selectors.EVENT_READ, self._receive)
        self.tasks: dict[str, Running] = {}
        self.waiting: deque[Order] = deque()
        self.deadlines: dict[str, float] = {}  # walltime ends of running tasks
        self.room = Room(1, None, 0)  # until the member says the worker's size
        self.ending: set[str] = set()
        self.limited: set[str] = set()
        self.stopping = False
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._memory_timer = False
        self._poll_timer = False
        self._imported: set[str] = set()
        self._warned_threads = False
        #: Each task's TMPDIR (or its reused process's) is made in here, and removed after it.
        self.scratch = Path(tempfile.mkdtemp(prefix=f"ensemble-worker-{name}-"))
        guard.tidy(str(self.scratch))
        #: Where installed modules live: this interpreter's own path at start (with -P, no cwd).
        self.installed = tuple(
            os.path.join(os.path.abspath(entry), "") for entry in sys.path if os.path.isdir(entry)
        )
        self.outputs = Outputs(self.scratch)
        #: Reused processes for the in-process tasks of the modules the member names (`reuse`).
        self.runners = (
            Runners(guard, self.installed, self.scratch, self._watch_runner)
            if Runners.available()
            else None
        )

    def run(self) -> int:
        """Serve until stopped; kill what still runs. The exit status says why it ended."""
        status = 0
        try:
            while not (self.stopping and not self.tasks):
                self._flush()
                for key, _ in self.selector.select(self._until_next_timer()):
                    key.data()
                self._run_timers()
        except Stopped as stopped:
            status = stopped.status
        finally:
            for task_id in list(self.tasks):
                self._signal(task_id, signal.SIGKILL)
            if self.runners is not None:
                self.runners.kill_idle()
            with contextlib.suppress(OSError):
                self._flush()
            shutil.rmtree(self.scratch, ignore_errors=True)
        return status

    # Messages ---------------------------------------------------------------------------------

    def _receive(self) -> None:
        try:
            data = self.connection.recv(RECEIVE_SIZE)
        except OSError:
            data = b""
        if not data:
            raise Stopped(1)  # the member closed or is gone: nobody waits for a report
        self._inbox += data  # a long line comes in many reads: appended to, not copied whole
        lines = []
        if b"\n" in data:
            *lines, self._inbox = self._inbox.split(b"\n")
        if len(self._inbox) > MAX_LINE:
            raise Stopped(1)
        for line in lines:
            self._handle(json.loads(line))

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "run":
            self.waiting.append(Order.from_message(message))
            self._start_waiting()
        elif op == "cancel":
            self._cancel(str(message["id"]))
        elif op == "withdraw":
            if self._take_waiting(str(message["id"])):
                self._send({"op": "withdrawn", "id": message["id"]})
        elif op == "size":
            self.room = Room(message["cores"], message.get("memory_mb"), message.get("gpus", 0))
        elif op == "preload":
            self._import(message.get("modules", []))
        elif op == "reuse" and self.runners is not None:
            self.runners.modules = frozenset(message.get("modules", []))
        elif op == "stop":
            self.stopping = True

    def _start_waiting(self) -> None:
        """Start the tasks given to this worker, in order, while they fit its room (its member
        gives it one more than fits, so that it never waits for the member between two)."""
        while self.waiting and self.room.fits(self.waiting[0]):
            order = self.waiting.popleft()
            self.room.take(order, 1)
            self._start(order)

    def _cancel(self, task_id: str) -> None:
        if not self._take_waiting(task_id):
            self._end(task_id, "cancel", "cancelled")
            return
        self._send({"op": "exception", "id": task_id, "type": "cancel", "note": "cancelled"})
        self._send({"op": "done", "id": task_id, "status": None})

    def _take_waiting(self, task_id: str) -> bool:
        """Take a task given to this worker out of its waiting ones; False if it is not there
        (started, ended, or given back)."""
        waiting = next((order for order in self.waiting if order.id == task_id), None)
        if waiting is not None:
            self.waiting.remove(waiting)
        return waiting is not None

    def _send(self, message: dict[str, Any]) -> None:
        self._outbox.append(encode(message))

    def _flush(self) -> None:
        if self._outbox:
            data = b"".join(self._outbox)
            self._outbox.clear()
            try:
                self.connection.sendall(data)
            except OSError:
                raise Stopped(1) from None

    # Tasks ------------------------------------------------------------------------------------

    def _start(self, order: Order) -> None:
        if order.id in self.tasks:
            return
        try:
            scratch = f"{self.scratch}/{next(self._sequence)}"
            running = warm_task.launch(
                order, self.guard, self.installed, scratch, self.runners, self.outputs
            )
        except TaskError as error:
            self.room.take(order, -1)
            self._send({"op": "exception", "id": order.id, "type": "exec", "note": str(error)})
            self._send({"op": "done", "id": order.id, "status": None})
            return
        self.tasks[order.id] = running
        if running.runner is None:
            self._watch_exit(order.id, running.pid)
        self._send({"op": "start", "id": order.id})
        if order.walltime:
            self.deadlines[order.id] = time.monotonic() + order.walltime
        if order.memory_mb:
            self.limited.add(order.id)
            if not self._memory_timer:
                self._memory_timer = True
                self._after(MEMORY_CHECK_SECONDS, self._check_memory)

    def _watch_exit(self, task_id: str, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            if not self._poll_timer:
                self._poll_timer = True
                self._after(EXIT_POLL_SECONDS, self._poll_exits)
            return
        self.selector.register(fd, selectors.EVENT_READ, lambda: self._reap(task_id, fd))

    def _reap(self, task_id: str, fd: int) -> None:
        self.selector.unregister(fd)
        os.close(fd)
        running = self.tasks[task_id]
        try:
            _, status = os.waitpid(running.pid, 0)
        except ChildProcessError:
            status = 0
        self._exited(task_id, status)

    def _poll_exits(self) -> None:
        for task_id, running in list(self.tasks.items()):
            pid, status = os.waitpid(running.pid, os.WNOHANG)
            if pid:
                self._exited(task_id, status)
        if self.tasks:
            self._after(EXIT_POLL_SECONDS, self._poll_exits)
        else:
            self._poll_timer = False

    def _watch_runner(self, runner: Runner) -> None:
        """Follow a fresh reused process: its reports, and its exit."""
        self.selector.register(runner.channel, selectors.EVENT_READ, lambda: self._said(runner))
        self.selector.register(runner.pidfd, selectors.EVENT_READ, lambda: self._gone(runner))

    def _said(self, runner: Runner) -> None:
        """A reused process's task ended cleanly: it serves the next, unless that task was
        being ended (then the process goes with it)."""
        said = runner.report()
        if not said:
            if said is not None:  # gone: its end follows on its pidfd
                self.selector.unregister(runner.channel)
            return
        task_id, runner.task_id = runner.task_id, None
        if task_id is None:
            return
        if task_id in self.ending:  # it was being ended: its process goes all the same
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.pid, signal.SIGKILL)
        elif self.runners is not None:
            self.runners.idle.append(runner)  # before the next task starts, which it serves
        learned = said[:1] == warm_child.LEARNED
        self._exited(task_id, 0, process_ended=False, result=said[1:], learned=learned)

    def _gone(self, runner: Runner) -> None:
        """A reused process exited: its task, if it ran one, ended with it (unless it said
        that the task had ended cleanly just before)."""
        said = runner.report() if runner.task_id is not None else None
        clean = bool(said)
        with contextlib.suppress(KeyError):
            self.selector.unregister(runner.channel)
        self.selector.unregister(runner.pidfd)
        try:
            _, status = os.waitpid(runner.pid, 0)
        except ChildProcessError:
            status = 0
        if self.runners is not None and runner in self.runners.idle:
            self.runners.idle.remove(runner)
        task_id, runner.task_id = runner.task_id, None
        if task_id is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(runner.pid, signal.SIGKILL)  # what it left in its group
            self.guard.remove(runner.pid)
        else:
            # A task that ended its process may have written what it learned before it did.
            learned = not clean or said[:1] == warm_child.LEARNED
            status = 0 if clean else status
            self._exited(task_id, status, result=said[1:] if said else b"", learned=learned)
        runner.close()

    def _exited(
        self,
        task_id: str,
        status: int,
        process_ended: bool = True,
        result: bytes = b"",
        learned: bool = True,
    ) -> None:
        """The task ended: when its process ended, what it left in its group ends too (a
        reused process that goes on serving left nothing); report the status, and the result
        its reused process sent back (`warm_result`). `learned`: whether the task may have
        written down modules it learned (a reused process says; a process that ended may have)."""
        if process_ended:
            self._signal(task_id, signal.SIGKILL)
        running = self.tasks.pop(task_id)
        self.deadlines.pop(task_id, None)
        if process_ended:
            self.guard.remove(running.pid)
        self.ending.discard(task_id)
        self.limited.discard(task_id)
        learned = warm_task.finish(running, self.outputs, learned)
        self.room.take(running.order, -1)
        done: dict[str, Any] = {"op": "done", "id": task_id, "status": status}
        if running.outputs_gone:
            done["tidied"] = True
        if result:
            done["result"] = base64.b64encode(result).decode()
        self._send(done)
        fresh = self._import(learned)
        if fresh:
            self._send({"op": "learned", "modules": fresh})
        self._start_waiting()

    def _end(self, task_id: str, kind: str, note: str) -> None:
        """End a running task for a reason (Flux's fatal exception): SIGTERM, later SIGKILL."""
        if task_id not in self.tasks or task_id in self.ending:
            return
        self.ending.add(task_id)
        self._send({"op": "exception", "id": task_id, "type": kind, "note": note})
        self._signal(task_id, signal.SIGTERM)
        pid = self.tasks[task_id].pid

        def kill_if_running() -> None:
            running = self.tasks.get(task_id)
            if running is not None and running.pid == pid:
                self._signal(task_id, signal.SIGKILL)

        self._after(GRACE_SECONDS, kill_if_running)

    def _signal(self, task_id: str, signum: int) -> None:
        running = self.tasks.get(task_id)
        if running is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(running.pid, signum)

    def _check_memory(self) -> None:
        watched = {
            task_id: self.tasks[task_id]
            for task_id in self.limited
            if task_id not in self.ending and task_id in self.tasks
        }
        if not watched:
            self._memory_timer = False
            return
        used = warm_task.group_memory({r.pid: r.baseline_mb for r in watched.values()})
        for task_id, running in watched.items():
            limit = running.order.memory_mb or 0
            total = used.get(running.pid, 0.0)
            if total > limit:
                self._end(
                    task_id, "oom", f"memory use {total:.0f} MB exceeded the limit of {limit} MB"
                )
        self._after(MEMORY_CHECK_SECONDS, self._check_memory)

    def _import(self, modules: list[str]) -> list[str]:
        """Import modules tasks will need, once each; the ones newly imported.

        The cyclic garbage collector is off meanwhile: an import makes objects by the hundred
        thousand (Snakemake's), and each time they grow by a quarter it went through all of
        them, a fifth of the import's time. They are module state, which lives as long as the
        worker, and are frozen after it (tasks' collections leave them alone, as before)."""
        fresh = []
        collecting = gc.isenabled()
        gc.disable()
        try:
            for name in modules:
                if name in self._imported or name in sys.modules:
                    continue
                self._imported.add(name)
                try:
                    importlib.import_module(name)
                except BaseException:
                    continue  # a module that only imports in its task's context: left to it
                fresh.append(name)
        finally:
            if collecting:
                gc.enable()
        if fresh:
            gc.freeze()  # what is imported stays out of the tasks' collections: fewer copies
        if fresh and threading.active_count() > 1 and not self._warned_threads:
            self._warned_threads = True
            print(
                f"warm worker {self.name}: an imported module started a thread; tasks are "
                "forked from this process all the same",
                file=sys.stderr,
                flush=True,
            )
        return fresh

    # Timers -----------------------------------------------------------------------------------

    def _after(self, seconds: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + seconds, next(self._sequence), callback))

    def _until_next_timer(self) -> float | None:
        """Seconds to the next timer or walltime. Walltimes are kept per running task (a few),
        not as timers, so that a task that ended leaves none behind however long its walltime."""
        due = [*self.deadlines.values(), *(self._timers[0][:1] if self._timers else ())]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            heapq.heappop(self._timers)[2]()
        for task_id, deadline in list(self.deadlines.items()):
            if deadline <= now:
                del self.deadlines[task_id]
                self._end(task_id, "timeout", "resource allocation expired")


def connect(address: str, name: str, secret: str) -> socket.socket:
    """Connect to the member and answer its challenge."""
    host, _, port = address.rpartition(":")
    connection = socket.create_connection((host.strip("[]"), int(port)), CONNECT_SECONDS)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = connection.makefile("rb")
    challenge = json.loads(reader.readline(MAX_LINE) or b"{}").get("challenge", "")
    hello = {"op": "hello", "name": name, "proof": proof(secret, challenge), "pid": os.getpid()}
    connection.sendall(encode({**hello, "host": socket.gethostname()}))
    reader.close()
    connection.settimeout(None)
    return connection


def _terminated(signum: int, frame: Any) -> None:
    raise Stopped(128 + signum)


def main() -> int:
    address = os.environ.pop(ADDRESS_ENV, "")
    name = os.environ.pop(NAME_ENV, "")
    secret = os.environ.pop(SECRET_ENV, "")
    if not (address and name and secret):
        print(
            "warm worker: started without its member's address, name and secret; a warm member "
            "starts its workers itself",
            file=sys.stderr,
        )
        return 2
    guard = Guard()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        connection = connect(address, name, secret)
    except (OSError, ValueError) as error:
        print(f"warm worker {name}: cannot reach its member at {address}: {error}", file=sys.stderr)
        return 1
    except Stopped as stopped:
        return stopped.status
    return Worker(connection, guard, name).run()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # nothing to finalize: skip unloading what tasks imported (a second)
