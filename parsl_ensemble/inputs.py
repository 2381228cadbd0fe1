"""Where the executor writes each call for the worker: appended to a file that many tasks share.

A file of its own per call was the dearest thing the executor did per task: creating a file costs
the kernel a new inode (on this project's 2-core test machine 0.3-0.9 ms of CPU in some
directories, more than all of Parsl's own work for an app) and a shared file system a metadata
operation. So calls are appended to a file of `CALLS_PER_FILE` calls, and each task's job names
its slice, `PATH@OFFSET+LENGTH`, as the worker's first argument. Each append opens and closes
the file, so that a worker on another node sees it once its job starts (close-to-open
consistency, as NFS gives). A file is removed once every task whose call it holds has resolved
(a resubmitted task reads its slice again) and no more calls go to it; `close` removes the rest.
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

CALLS_PER_FILE = 1000
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
#: Names unique in this process, whichever executor (several may share a working_dir).
_NAMES = itertools.count(1)


class Inputs:
    """The executor's call files: which one takes the next call, and how many tasks each holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Path | None = None
        #: The directory of `_current`.
        self._directory = Path()
        self._size = 0
        self._calls = 0
        #: Tasks not yet resolved, per file.
        self._unresolved: dict[Path, int] = {}

    def write(self, directory: Path, data: bytes) -> tuple[str, Path]:
        """Append a call: (the worker's argument for it, the file to `release` it from)."""
        with self._lock:
            path = self._current
            if path is None or directory != self._directory or self._calls >= CALLS_PER_FILE:
                path = self._rotate(directory)
            fd = os.open(path, _APPEND)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            offset, self._size = self._size, self._size + len(data)
            self._calls += 1
            self._unresolved[path] = self._unresolved.get(path, 0) + 1
        return f"{path}@{offset}+{len(data)}", path

    def release(self, path: Path) -> None:
        """A task whose call `path` holds has resolved."""
        with self._lock:
            if path in self._unresolved:  # not when `close` came first
                self._unresolved[path] -= 1
                self._remove_if_done(path)

    def close(self) -> None:
        """Remove every file left (the executor shuts down)."""
        with self._lock:
            for path in [*self._unresolved, self._current]:
                if path is not None:
                    path.unlink(missing_ok=True)
            self._unresolved.clear()
            self._current = None

    def _rotate(self, directory: Path) -> Path:
        previous = self._current
        # `task-*.in`, as each task's input file was named: whoever looks for task files (a
        # clean-up, a test that none is left) finds these too.
        self._current = directory / f"task-calls-{os.getpid()}-{next(_NAMES)}.in"
        self._directory = directory
        os.close(os.open(self._current, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        self._size = self._calls = 0
        if previous is not None:
            self._remove_if_done(previous)
        return self._current

    def _remove_if_done(self, path: Path) -> None:
        if path != self._current and not self._unresolved.get(path):
            self._unresolved.pop(path, None)
            path.unlink(missing_ok=True)
