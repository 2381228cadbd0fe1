"""The guard: a small process that ends a warm worker's tasks when the worker dies first.

Each task runs in a process group of its own, so that the worker can stop (and measure) one task
without touching the others. But then a member that ends the worker's job by killing the
worker's process group (the local member, Flux's job shell) or a SIGKILL of the worker alone
would leave the tasks running, and a task the rules resubmit would run twice. So the worker
forks the guard first, before it imports anything large; every task writes its group to the
guard's pipe as it starts, and the worker writes it again when the task has ended. The guard
lives in a group of its own and ignores the signals a job's end sends; when the pipe reaches
end of file (the worker and every task process have closed it, which a dead worker does), it
kills each group still registered, removes the worker's scratch directory (the tasks' TMPDIRs,
which a worker that was killed could not remove) and exits.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
from typing import NoReturn

#: Writes of at most this many bytes to a pipe are atomic: a line never mixes with another's.
_LINE_MAX = select.PIPE_BUF


class Guard:
    """The worker's side of the guard: a pipe the worker and its tasks write groups to."""

    def __init__(self) -> None:
        read_end, self.fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.fd)
            _watch(read_end)
        os.close(read_end)

    def add(self, group: int) -> None:
        """Called by a task's own process, before it runs anything."""
        _write(self.fd, f"+{group}\n")

    def remove(self, group: int) -> None:
        """Called by the worker once the task's group was killed after its end."""
        _write(self.fd, f"-{group}\n")

    def tidy(self, directory: str) -> None:
        """The worker's scratch directory, for the guard to remove once the worker is gone."""
        _write(self.fd, f"@{directory}\n")


def _write(fd: int, line: str) -> None:
    data = line.encode()
    assert len(data) <= _LINE_MAX
    with contextlib.suppress(OSError):  # the guard is gone: nothing left to tell it
        os.write(fd, data)


def _watch(read_end: int) -> NoReturn:
    """The guard's life: collect groups until end of file, then kill those left."""
    try:
        os.setpgid(0, 0)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        os.closerange(0, read_end)
        os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
        groups: set[int] = set()
        directories: list[bytes] = []
        pending = b""
        while data := os.read(read_end, 4096):
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.startswith(b"@"):
                    directories.append(line[1:])
                    continue
                group = int(line[1:])
                if line.startswith(b"+"):
                    groups.add(group)
                else:
                    groups.discard(group)
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        os._exit(0)
