"""The child of `process_ensemble`: an ensemble's controller in a process of its own.

`main(fd)` reads `open` from its end of the socket pair and opens the ensemble, or refuses
with the error a user can fix. Then it serves submissions, cancels and snapshots until the
parent says `close`, or is gone (the socket reads nothing more), or SIGTERM comes (it shuts the
socket for reading: `end_on_sigterm`): then it closes the ensemble, which ends its jobs as a
controller in the parent would. Ctrl-C is the workflow's to act on (it closes the ensemble):
the child ignores SIGINT.

What it sends goes through one thread (`Outbox`), all that waits in one write: the ends of
jobs that end together, and the records the controller logs (for the parent's handlers).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import signal
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any

from ensemble_core.actions import one_line
from ensemble_core.api import open_ensemble
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.jobs import JobHandle
from ensemble_core.signal_watch import SignalWatch


def main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not for the jobs it starts: a job holding it would hide this process's end from the
    # parent until the job ended too.
    os.set_inheritable(fd, False)
    connection = Connection(fd)
    outbox = Outbox(connection)
    try:
        _, arguments, level = connection.recv()
        forward_logs(outbox, level)
        try:
            ensemble = open_ensemble(**arguments)
        except EnsembleError as error:
            outbox.put(("refused", type(error).__name__, str(error)))
            return
        except Exception as error:  # a bug: said in one line, not left to a traceback here
            logging.getLogger(__name__).debug("opening the ensemble failed", exc_info=True)
            why = f"the ensemble did not open: {one_line(error)}"
            outbox.put(("refused", "EnsembleError", why))
            return
        outbox.put(("opened",))
        serve(connection, ensemble, outbox)
    except (EOFError, OSError):
        pass  # the parent went before it asked for anything
    finally:
        outbox.close()


def serve(connection: Connection, ensemble: Ensemble, outbox: Outbox) -> None:
    """Serve the parent until it closes the ensemble or is gone; then close it."""
    handles: dict[int, JobHandle] = {}

    def ended(key: int, handle: JobHandle) -> None:
        handles.pop(key, None)
        first = handle.attempts[0].spec
        attempts = [
            (None if a.spec is first else a.spec, a.record, a.member_id) for a in handle.attempts
        ]
        assert handle.outcome is not None
        report = (handle.outcome.value, handle.reason, handle.log_paths, attempts)
        outbox.put(("ended", key, *report))

    end_on_sigterm(connection)
    try:
        while True:
            message = connection.recv()
            kind = message[0]
            if kind == "submit":
                _, key, spec, identity = message
                try:
                    handle = handles[key] = ensemble.submit(spec, identity)
                except EnsembleError as error:  # closed meanwhile: this job never starts
                    outbox.put(("ended", key, "cancelled", f"cancelled: {error}", [], []))
                    continue
                handle.add_done_callback(lambda done, key=key: ended(key, done))
            elif kind == "cancel":
                if (handle := handles.get(message[1])) is not None:
                    ensemble.cancel(handle)
            elif kind == "snapshot":
                outbox.put(("snapshot", message[1], ensemble.snapshot()))
            elif kind == "close":
                break
    except (EOFError, OSError):
        pass  # the parent is gone, or SIGTERM came: its jobs end too
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # closing, once
        ensemble.close()
        outbox.put(("closed", ensemble.snapshot()))


def end_on_sigterm(connection: Connection) -> None:
    """SIGTERM ends `serve`'s loop as the parent's going does, whichever thread takes it.

    A Python handler raising here would wait, when another thread took the signal, for the
    parent's next message, which may never come (`signal_watch`). So the handler does nothing
    but be there, and the watch shuts the socket for reading: the main thread's read then ends
    (once what the parent sent before is read), as it ends when the parent is gone.
    """

    def shut() -> None:
        with socket.socket(fileno=os.dup(connection.fileno())) as end:
            end.shutdown(socket.SHUT_RD)

    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    SignalWatch.start(signal.SIGTERM, shut)


class Outbox:
    """Messages to the parent, sent by a thread of its own: all that wait go in one write."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_all, name="ensemble-outbox", daemon=True)
        self._thread.start()

    def put(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def put_nowait(self, record: logging.LogRecord) -> None:
        """A record from `forward_logs`'s handler."""
        self._queue.put(("log", record))

    def close(self) -> None:
        """Send what waits, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _send_all(self) -> None:
        get, empty = self._queue.get, self._queue.empty
        parent_gone = False
        while True:
            batch = [get()]
            while not empty():
                batch.append(get())
            messages = [message for message in batch if message is not None]
            if messages and not parent_gone:
                try:
                    self._connection.send(messages)
                except OSError:
                    parent_gone = True  # nobody reads: the rest is dropped
            if batch[-1] is None:
                return


def forward_logs(outbox: Outbox, level: int) -> None:
    """Hand what this process logs at `level` and above (the parent's level for the core) to
    the parent, whose handlers decide where it goes."""
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(logging.handlers.QueueHandler(outbox))  # type: ignore[arg-type]
