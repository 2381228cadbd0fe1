"""The controller's side of the state journal's writer process: flushes handed over in order,
each known durable once the writer acknowledges it.

A flush handed over gets a ticket (its number). Where durability must come first (before a
submission, a resize or a cancel reaches the queue), the controller waits for that ticket:
`wait` blocks (at the end of a run), `durable` lets the loop go on meanwhile (the action's own
task waits, while events are handled), so the controller's thread never idles on the disk.

Before the writer is started, flushes are written on the controller's thread: a short run
starts no process. Once it is started they go to it only, in order: those made while it starts
are held here and sent once it says it is ready. Every flush it has not acknowledged is kept
(packed) until it is: if the writer is killed, the controller writes them itself, in order, and
then every later flush. Writing one twice (done, not yet acknowledged) changes nothing, for every
statement replaces rows by their key.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import marshal
import os
import select
import sqlite3
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import IO, Any

from ensemble_core import state_writer

log = logging.getLogger(__name__)

#: A flush of this many jobs starts the writer process: from about there on, writing on the
#: controller's thread costs it more than handing the rows over does.
WRITER_ROWS = 500

#: The pipe to the writer holds this much (Linux's default for a process's pipes is at most
#: 1 MiB; 64 KiB otherwise): a flush of a few thousand jobs goes in at once, where a small pipe
#: kept the controller waiting for the writer to take it in.
PIPE_BYTES = 1 << 20

Statements = list[tuple[str, Any]]


class WriterHandoff:
    """Hands a journal's flushes to its writer process; written from the loop's thread only."""

    def __init__(self, db: sqlite3.Connection, database: Path, writer_lock: IO[str]) -> None:
        self._db = db
        self._database = database
        self._writer_lock = writer_lock
        self.writer: subprocess.Popen[bytes] | None = None
        #: none (flushes written here), starting (held here until it is ready), ready (sent to
        #: it), gone (it was killed, or never started: written here again).
        self.state = "none"
        #: Flushes numbered from 1: the last one handed over, the last one acknowledged.
        self._sent = 0
        self._acked = 0
        #: The packed flushes `_acked + 1 .. _sent`, the last `_unsent` of them not yet sent.
        self._frames: deque[bytes] = deque()
        self._unsent = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_failed = False

    def send(self, statements: Statements, jobs: int) -> int:
        """Hand one flush over; its ticket (0: written already, on this thread)."""
        if self.state == "none" and jobs >= WRITER_ROWS:
            self.start()
        if self.state in ("none", "gone"):
            self._write_here(statements)
            return 0
        self._frames.append(state_writer.pack(statements))
        self._sent += 1
        self._unsent += 1
        self._poll()
        if self.state == "ready":
            self._push()
        return self._sent

    @property
    def last_ticket(self) -> int:
        return self._sent

    @property
    def behind(self) -> bool:
        """Whether the writer has flushes it did not say it wrote (a stalled disk, or busy)."""
        return self._acked < self._sent and self._writer_up

    @property
    def _writer_up(self) -> bool:
        """Whether flushes go to the writer (held while it starts, sent once it is ready)."""
        return self.state in ("starting", "ready")

    def wait(self, ticket: int) -> None:
        """Return once flush `ticket` is written (by the writer, or here if it is gone)."""
        while self._acked < ticket and self._writer_up:
            self._receive(os.read(self._from_writer.fileno(), 4096))

    async def durable(self, ticket: int) -> None:
        """Wait, letting the loop go on, until flush `ticket` is written."""
        if self._acked >= ticket or not self._writer_up:
            return
        self._listen()
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, future))
        await future

    def start(self) -> None:
        """Hand the transactions to a writer process from now on (as soon as it is up)."""
        try:
            self.writer = subprocess.Popen(
                [sys.executable, "-I", "-S", state_writer.__file__, str(self._database)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # its acknowledgements, read here only
                pass_fds=(self._writer_lock.fileno(),),
                start_new_session=True,  # the terminal's signals are the controller's
            )
        except OSError as error:
            log.warning(
                "ensemble: cannot start the state journal's writer (%s); the controller writes "
                "the journal itself",
                error,
            )
            self.state = "gone"
            return
        self._to_writer: IO[bytes] = self.writer.stdin  # type: ignore[assignment]
        self._from_writer: IO[bytes] = self.writer.stdout  # type: ignore[assignment]
        with contextlib.suppress(OSError):  # where the system allows it
            fcntl.fcntl(self._to_writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.state = "starting"
        with contextlib.suppress(RuntimeError):  # no loop runs (a benchmark, a test): polled
            asyncio.get_running_loop()
            self._listen()

    def close(self) -> None:
        """Let the writer write what it has, and end (the caller waited for its last flush)."""
        self._unlisten()
        if self.writer is None:
            return
        with contextlib.suppress(BrokenPipeError):
            self._to_writer.close()  # the writer ends once it has written everything
        self.writer.wait()
        self._from_writer.close()

    # Internals --------------------------------------------------------------------------------

    def _write_here(self, statements: Statements) -> None:
        self._write_failed = state_writer.write(self._db, statements, self._write_failed, log.error)

    def _poll(self) -> None:
        """Take in what the writer said, without waiting."""
        reader = self._from_writer
        while self._writer_up and select.select([reader], [], [], 0)[0]:
            self._receive(os.read(reader.fileno(), 4096))

    def _receive(self, said: bytes) -> None:
        """The writer's bytes: the first says it is ready, each after it that a flush is
        written; nothing at all, that it ended."""
        if not said:
            self._gone()
            return
        if self.state == "starting":
            self.state = "ready"
            said = said[1:]
            self._push()
        if said:
            self._acked += len(said)
            for _ in said:
                self._frames.popleft()
            self._wake()

    def _push(self) -> None:
        """Send the flushes held while the writer started."""
        if not self._unsent:
            return
        frames = list(self._frames)[-self._unsent :]
        self._unsent = 0
        try:
            for payload in frames:
                self._to_writer.write(state_writer.FRAME.pack(len(payload)) + payload)
            self._to_writer.flush()
        except (BrokenPipeError, ValueError):
            self._gone()

    def _gone(self) -> None:
        """The writer ended before its input did (killed): write here what it did not say it
        wrote, in order, and from now on every flush."""
        if self.state == "gone":
            return
        self.state = "gone"
        log.warning(
            "ensemble: the state journal's writer (pid %s) ended; the controller writes the "
            "journal itself from now on",
            self.writer.pid if self.writer is not None else "?",
        )
        self._unlisten()
        for payload in self._frames:
            self._write_here(marshal.loads(payload))
        self._frames.clear()
        self._acked, self._unsent = self._sent, 0
        self._wake()

    def _wake(self) -> None:
        """Resolve the waits of the flushes now written."""
        if not self._waiters:
            return
        waiting = []
        for ticket, future in self._waiters:
            if ticket <= self._acked:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((ticket, future))
        self._waiters = waiting

    def _listen(self) -> None:
        """Take the writer's bytes in as they come, on the running loop."""
        if self._loop is None and self._writer_up:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._from_writer.fileno(), self._readable)

    def _readable(self) -> None:
        self._receive(os.read(self._from_writer.fileno(), 4096))

    def _unlisten(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._from_writer.fileno())
