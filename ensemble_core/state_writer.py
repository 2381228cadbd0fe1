"""The state journal's writer: a process of its own that writes each flush in one transaction.

Why a process and not a thread: a controller busy with events shared its one GIL with a writer
thread, and lost a quarter of its event rate to it (Python's sqlite3 holds the GIL to bind each
value, and each hand-over of the GIL waits for the holder to yield it). Here the controller only
packs each flush's rows (`marshal`, about 0.2 µs a row) and writes them down a pipe; this
process binds and writes them on the other core.

It runs as a script (`python -I -S state_writer.py DATABASE`), so it imports only the standard
library and starts in milliseconds; the controller imports it as a module for what both sides
share (the framing, the connection, the transaction). It holds the state directory's writer
lock (inherited from the controller) until it has written everything it was given: a controller
that dies leaves its last flushes written, and the next controller waits for them. It ends when
its input ends (the controller closed it, or died), after writing what it read.

Input: frames of `!Q` length and marshalled `statements`: `(head, rows)` pairs, a head being
`INSERT ... INTO table (columns)` or a bare statement (`DELETE FROM batches`) with rows None.
After each frame is committed, one byte goes back on standard output: the controller waits for
it where durability comes first (before changing the queue), and keeps the frame until then
(`state_handoff`). One byte goes back at the start too, once the writer is ready: the
controller holds the flushes made before it.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import queue
import signal
import sqlite3
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

FRAME = struct.Struct("!Q")
ACK = b"."


def pack(statements: list[tuple[str, list[tuple[Any, ...]] | None]]) -> bytes:
    """One flush as the writer reads it (without its frame's length)."""
    try:
        return marshal.dumps(statements)
    except ValueError:  # a value of a subclass (an IntEnum, numpy's float64...): made plain
        return marshal.dumps(
            [
                (head, rows and [tuple(map(_plain, row)) for row in rows])
                for head, rows in statements
            ]
        )


def _plain(value: Any) -> Any:
    """A value marshal can write, as SQLite would have stored it."""
    for kind in (bool, int, float, str, bytes):
        if isinstance(value, kind):
            return kind(value)
    return value if value is None else str(value)


def connect(database: Path | str) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit (`transaction`)."""
    db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction (outside one, every statement would be a transaction of its own, a
    hundred times slower)."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def insert(db: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert `rows` with few statements of many rows each, not one statement per row: a
    statement's fixed cost (preparing, stepping) is paid per 1,024 rows. Statement sizes are
    powers of two, so the few shapes stay in the connection's statement cache."""
    if not rows:
        return
    width = len(rows[0])
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    size = 1 << min(10, most.bit_length() - 1)
    row = "(" + ",".join("?" * width) + ")"
    start, count = 0, len(rows)
    while start < count:
        while size > count - start:
            size >>= 1
        chunk = rows[start : start + size]
        db.execute(f"{head} VALUES {','.join([row] * size)}", list(chain.from_iterable(chunk)))
        start += size


def apply(db: sqlite3.Connection, statements: list[tuple[str, Any]]) -> None:
    """One flush's statements, in one transaction."""
    with transaction(db):
        for head, rows in statements:
            if rows is None:
                db.execute(head)
            else:
                insert(db, head, rows)


def write(
    db: sqlite3.Connection,
    statements: list[tuple[str, Any]],
    failed: bool,
    say: Callable[[str], Any],
) -> bool:
    """`apply`, for the writer and for a controller writing its journal itself: a failure (a full
    disk) must not stop the run, and is said once until a flush is written again. Whether this
    one failed."""
    try:
        apply(db, statements)
    except sqlite3.Error as error:
        if not failed:
            say(f"ensemble: cannot write the state journal: {error}")
        return True
    return False


def _frames(source: BinaryIO, into: queue.SimpleQueue[Any]) -> None:
    """Read frames as they come (the controller never waits on a full pipe); None at the end."""
    try:
        while header := source.read(FRAME.size):
            if len(header) < FRAME.size:
                break
            (length,) = FRAME.unpack(header)
            payload = source.read(length)
            if len(payload) < length:  # the controller died mid-frame: that flush is lost
                break
            into.put(marshal.loads(payload))
    finally:
        into.put(None)


def serve(database: str, source: BinaryIO, acks: BinaryIO) -> None:
    db = connect(database)
    acks.write(ACK)  # ready: until now the controller wrote its flushes itself
    acks.flush()
    frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_frames, args=(source, frames), daemon=True).start()
    failed = False
    while (statements := frames.get()) is not None:
        failed = write(db, statements, failed, lambda text: print(text, file=sys.stderr))
        try:
            acks.write(ACK)
            acks.flush()
        except OSError:  # the controller is gone; write what is left all the same
            pass
    db.close()


if __name__ == "__main__":
    # Signals are the controller's to handle (a SIGTERM to the whole job makes it write its last
    # flush, which this process must live to write); this process ends when its input does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)  # everything is written and closed: skip the interpreter's teardown (ms)
