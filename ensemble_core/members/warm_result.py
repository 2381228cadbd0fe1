"""A warm task's result, carried back with the task's end instead of in a file of its own.

Parsl's lean worker hands each app's outcome back in a file, and a new file costs the kernel a
new inode (0.1 to 0.9 ms of CPU on this project's 2-core test machine, about what the rest of a
task costs its reused process), then costs the submitter its reading and removal. HTEX sends
results over its socket; so does a reused task process (`warm_child.serve`): a task offers the
bytes here, the process sends them to its worker with the message that says the task ended
cleanly, the worker sends them to its member with `done`, and the member puts them in the task's
`finish` event (context `result`), where the submitter reads them (`AttemptRecord.result`).

A task only offers. Where nothing takes the offer (a task forked for itself, a plain job, bytes
over `LIMIT`), `offer` answers False and the task writes its file as before. When a task that
was taken at its word ends its process after all (it left a thread running, ...), the process
calls what the task gave for that case (its file's writer) before it exits (`fall_back`): a
result is never lost.

The module holds no more than that state, and a task finds it in `sys.modules` (only a warm
task's process has imported it), so that a task outside warm workers imports nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable

#: The largest result carried back: it travels in one message of the reused process's socket
#: (SOCK_SEQPACKET, whose default send buffer is about 200 kB), and in one JSON line.
LIMIT = 64 * 1024

_accepting = False
_offered: tuple[bytes, Callable[[], None]] | None = None


def offer(data: bytes, otherwise: Callable[[], None]) -> bool:
    """Hand back `data` with the task's end: True if taken (the task writes no file), False if
    the task must write it itself. `otherwise` writes it, should the process end after all."""
    global _offered
    if not _accepting or _offered is not None or len(data) > LIMIT:
        return False
    _offered = (data, otherwise)
    return True


def accept() -> None:
    """A reused process, before each task: take one offer."""
    global _accepting, _offered
    _accepting, _offered = True, None


def take() -> bytes:
    """After a task that ended cleanly: what it offered (b"" for nothing), to send; should
    that fail, `fall_back` still writes it."""
    global _accepting
    _accepting = False
    return _offered[0] if _offered is not None else b""


def fall_back() -> None:
    """The task's process ends after all: what it offered goes where the task would have put
    it (the task's own writer)."""
    global _accepting, _offered
    offered, _accepting, _offered = _offered, False, None
    if offered is not None:
        offered[1]()
