"""A warm task's standard streams: its output files opened for it, and removed if it left them
empty (as the local member treats a job's).

Most short tasks write nothing, yet each needs a file of its own while it runs, and a new file
costs the kernel an inode: 0.1 to 0.9 ms of CPU on this project's 2-core test machine, more than
the rest of what a worker does for a task in a reused process. So a file a task left empty is
not removed but moved into the worker's scratch directory, and linked in as the next task's new
output file (a link and a rename cost a tenth of a new file). To the task and its user little
differs: the file appears at its path when the task starts and, if still empty, is gone when
the task ends; only its times and group are those of the file it was made as (in a set-group-ID
directory a new file would take the directory's group). Across file systems (a link cannot
cross them) files are made and removed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

#: Empty files a worker keeps for later tasks.
SPARES = 8
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


class TaskError(Exception):
    """The task cannot start (its output cannot be opened): the task fails with this sentence."""


class Outputs:
    """Opens tasks' output files for a worker, and keeps the spare files it reuses for them."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = str(scratch)  # the worker's: spare files wait in here
        #: Paths are strings: pathlib's joins were a quarter of a worker's own work per task.
        self.spares: list[str] = []
        self._names = itertools.count(1)
        #: Every task's stdin, opened once (the worker hands each task a copy).
        self.stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def open(self, stdout: str, stderr: str, created: list[str]) -> list[int]:
        """stdin, stdout and stderr of a task (appended to; files made for it are noted);
        `close` them once the task has them."""
        fds = [self.stdin]
        paths = [stdout] if stderr == stdout else [stdout, stderr]
        try:
            for path in paths:
                try:
                    fds.append(self._open(path, created))
                except FileNotFoundError:  # no directory: made (not tried first: a syscall)
                    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                    fds.append(self._open(path, created))
        except (OSError, ValueError) as error:
            self.close(fds)
            reason = getattr(error, "strerror", None) or error
            raise TaskError(f"cannot open the job's output file {path}: {reason}") from None
        return [fds[0], fds[1], fds[-1]]

    def close(self, fds: list[int]) -> None:
        """Close what `open` opened for a task (its stdin stays open for the next)."""
        for fd in set(fds):
            if fd != self.stdin:
                os.close(fd)

    def tidy(self, created: list[str]) -> int:
        """After the task: the files made for it that it left empty go (kept as spares); how
        many went."""
        gone = 0
        for path in created:
            try:
                if os.stat(path).st_size:
                    continue
                if len(self.spares) < SPARES:
                    spare = f"{self.scratch}/spare-{next(self._names)}"
                    with contextlib.suppress(OSError):
                        os.rename(path, spare)
                        self.spares.append(spare)
                        gone += 1
                        continue
                os.unlink(path)
                gone += 1
            except OSError:
                pass
        return gone

    def _open(self, path: str, created: list[str]) -> int:
        """The file at `path`, for appending: made for the task (noted) unless it is there."""
        try:
            fd = self._create(path)
        except FileExistsError:
            return os.open(path, _APPEND)
        created.append(path)
        return fd

    def _create(self, path: str) -> int:
        """A new file at `path` (FileExistsError if there is one): a spare linked in there."""
        while self.spares:
            spare = self.spares.pop()
            try:
                os.link(spare, path)  # never replaces a file, unlike a rename
            except FileExistsError:
                self.spares.append(spare)
                raise
            except OSError:  # another file system, or the spare is gone
                with contextlib.suppress(OSError):
                    os.unlink(spare)
                break
            os.unlink(spare)
            return os.open(path, _APPEND)
        return os.open(path, _APPEND | os.O_CREAT | os.O_EXCL, 0o666)
