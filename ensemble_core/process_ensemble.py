"""An ensemble whose controller runs in a process of its own (`open_apart`), for a front door
whose own threads are busy: Parsl's main thread makes apps, its launch thread launches them.

In one process, the controller's loop and the workflow's threads take turns at one GIL. With
warm workers at a thousand tasks a second the workflow's process was what everything waited
for: the controller's thread took about 0.2 ms of it a task, and the handoffs of the GIL
between four busy threads about 0.1 ms more, while the machine's other core had room. HTEX
keeps its interchange in a process of its own for the same reason. Apart, the workflow's
process only sends each job (its spec pickled, one write) and reads the outcomes, several in
one message; the controller, its member and the rules run in the child at full speed.

The child (`process_controller`) is this Python, started with its end of a socket pair.
Messages are pickles, each with its length (multiprocessing's `Connection`): both ends are one
program, so nothing a message holds needs guarding against. The parent sends `("open",
arguments, log level)`, then `("submit", key, spec, identity)`, `("cancel", key)`,
`("snapshot", ticket)` and `("close",)`. The child sends lists of messages: `("opened",)` or
`("refused", error class, message)`, then `("ended", key, outcome, reason, log paths,
attempts)`, `("log", record)`, `("snapshot", ticket, value)`, and `("closed", snapshot)`
last.

Every handle resolves exactly once: from the child's report of its job's end, or here, should
the child end without one (killed, crashed), failed and saying so. The child ends its jobs when
the parent goes: its end of the socket then reads nothing more.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ensemble_core.actions import one_line
from ensemble_core.errors import ConfigError, EnsembleError, MemberError
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.jobs import Attempt, ControllerThread, JobHandle, refuse_on_controller_thread
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

#: Where `ensemble_core` is imported from: the child imports it from there too.
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
#: How long `close` waits for the child to end its jobs and itself (its controller's own close
#: is bounded by 90 s) before it is killed.
CLOSE_SECONDS = 120.0
#: The errors a refusal may name; any other is an EnsembleError with the same message.
ERRORS: dict[str, type[EnsembleError]] = {
    "ConfigError": ConfigError,
    "MemberError": MemberError,
    "EnsembleError": EnsembleError,
}
#: An attempt as the child reports it: its spec (None: the job's own, as submitted), its
#: record, and its id on the member.
AttemptReport = tuple[JobSpec | None, AttemptRecord, Any]


def open_apart(**arguments: Any) -> ProcessEnsemble:
    """`open_ensemble(**arguments)` in a process of its own; raises what it would raise (the
    same class of EnsembleError with the same message), after the child has ended."""
    return ProcessEnsemble(arguments)


class ProcessEnsemble:
    """The workflow's side of an ensemble whose controller runs in a child process: `submit`,
    `cancel`, `snapshot` and `close` as `Ensemble`'s, from any thread."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        bootstrap = (
            f"import sys; sys.path[:0] = [{PACKAGE_ROOT!r}]; "
            f"from ensemble_core.process_controller import main; main({theirs.fileno()})"
        )
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-c", bootstrap],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._connection = Connection(ours.detach())
        self._lock = threading.Lock()
        self._handles: dict[int, JobHandle] = {}
        self._keys = itertools.count(1)
        self._tickets = itertools.count(1)
        self._snapshots: dict[int, cf.Future[dict[str, Any]]] = {}
        self._final: dict[str, Any] | None = None
        self._closing = False
        #: Why the child is gone, once it is: no more submissions.
        self._gone_why = ""
        level = logging.getLogger("ensemble_core").getEffectiveLevel()
        try:
            self._connection.send(("open", arguments, level))
        except Exception as error:  # a setting that cannot be pickled: the child just leaves
            self._connection.close()
            self._process.wait()
            raise EnsembleError(
                f"the ensemble's settings cannot be handed to its controller's process: "
                f"{one_line(error)} (give plain values: text, numbers, lists, mappings)"
            ) from None
        self._opened()
        self._reader = _Reader(target=self._read, name="ensemble-apart", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The controller's process."""
        return self._process.pid

    def submit(self, spec: JobSpec, identity: str | None = None) -> JobHandle:
        handle = JobHandle(next(self._keys), spec, identity=identity)
        with self._lock:
            if self._closing or self._gone_why:
                raise EnsembleError("the ensemble is closed: no more jobs can be submitted")
            self._handles[handle.key] = handle
            # If the child is gone, the reader, about to know, resolves the handle.
            with contextlib.suppress(OSError):
                self._connection.send(("submit", handle.key, spec, identity))
        return handle

    def cancel(self, handle: JobHandle) -> None:
        self._tell(("cancel", handle.key))

    def snapshot(self) -> dict[str, Any]:
        """Counts per group and the actions so far (also after `close()`)."""
        with self._lock:
            if self._final is not None or self._gone_why:
                return self._final or {}
            ticket = next(self._tickets)
            answer = self._snapshots[ticket] = cf.Future()
        self._tell(("snapshot", ticket))
        return answer.result(30)

    def close(self) -> None:
        """Cancel every job still active, let the child end them and itself, and wait for it
        (bounded: it is killed after `CLOSE_SECONDS`). Every handle is resolved when it
        returns."""
        refuse_on_controller_thread("ProcessEnsemble.close()")
        with self._lock:
            self._closing = True
        self._tell(("close",))
        self._reader.join(CLOSE_SECONDS)
        if self._reader.is_alive():
            log.error("ensemble: its controller process did not end within %gs", CLOSE_SECONDS)
            self._process.kill()
            self._reader.join()
        self._process.wait()

    # Internals ----------------------------------------------------------------------------

    def _tell(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self._gone_why:
                return
            with contextlib.suppress(OSError):  # gone: the reader resolves what it leaves
                self._connection.send(message)

    def _opened(self) -> None:
        """Wait for the child's answer to `open`: a refusal is raised here, once the child is
        gone (what it logged meanwhile is logged here first)."""
        while True:
            try:
                messages = self._connection.recv()
            except (EOFError, OSError):
                messages = [("refused", "EnsembleError", self._ended_why("could not start"))]
            for message in messages:
                if message[0] == "log":
                    _log(message[1])
                elif message[0] == "opened":
                    return
                elif message[0] == "refused":
                    self._connection.close()
                    self._process.wait()
                    raise ERRORS.get(message[1], EnsembleError)(message[2])

    def _read(self) -> None:
        closed = False
        try:
            while True:
                for message in self._connection.recv():
                    kind = message[0]
                    if kind == "ended":
                        self._ended(*message[1:])
                    elif kind == "log":
                        _log(message[1])
                    elif kind == "snapshot":
                        answer = self._snapshots.pop(message[1], None)
                        if answer is not None:
                            answer.set_result(message[2])
                    elif kind == "closed":
                        self._final, closed = message[1], True
        except (EOFError, OSError):
            pass
        finally:
            self._gone(closed)

    def _ended(
        self,
        key: int,
        outcome: str,
        reason: str,
        log_paths: list[str],
        attempts: list[AttemptReport],
    ) -> None:
        handle = self._handles.pop(key, None)
        if handle is None:
            return
        first = handle.spec
        if attempts:  # none: it never reached the controller's queue
            handle.attempts = [
                Attempt(spec or first, member_id=member_id, record=record, phase=3)
                for spec, record, member_id in attempts
            ]
        handle.resolve(Outcome(outcome), reason, log_paths)

    def _gone(self, closed: bool) -> None:
        """The child's connection ended: what it left unresolved resolves here."""
        if closed:
            outcome, why = Outcome.CANCELLED, "cancelled: the ensemble was closed first"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)  # it is leaving: no zombie left behind
        else:
            outcome = Outcome.FAILED
            why = f"failed: {self._ended_why('ended before the job did')}; it may still run"
        with self._lock:
            self._gone_why = why
            handles, self._handles = list(self._handles.values()), {}
            answers, self._snapshots = list(self._snapshots.values()), {}
        self._connection.close()
        for handle in handles:
            handle.resolve(outcome, why, [])
        for answer in answers:
            answer.set_exception(EnsembleError(why))

    def _ended_why(self, what: str) -> str:
        try:
            status = self._process.wait(5)
        except subprocess.TimeoutExpired:
            return f"the ensemble's controller process ({self._process.pid}) {what}"
        return f"the ensemble's controller process {what} ({_status(status)})"


class _Reader(ControllerThread):
    """Reads the child's messages; handles resolve and call back here, as they do on the
    controller's thread in one process (a callback may not block waiting for a job)."""


def _log(record: logging.LogRecord) -> None:
    """A record the child logged, handed to this process's handlers."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def _status(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"
