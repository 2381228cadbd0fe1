"""Where the local member's jobs write: one file per job, or one per group or per run.

Every run (every start of the member) writes into a directory of its own under `log_dir`, named
by the time it started (`<log_dir>/20261123-031500/`, `-2` and so on if that name is taken), so
a run never appends to an older run's files although job ids start at 1 in each. A run whose
jobs wrote nothing leaves no directory: it is removed at `close` when empty (and by the reaper
if the controller was killed).

Per job (the default), each job writes `<run dir>/<group>-<id>.out` and `.err`; a file the
member created that is still empty when the job ends is removed, so 20,000 quiet jobs leave no
files. Ensembles of many small jobs may rather collect output per group (`<run dir>/<group>.log`)
or per run (`<run dir>/ensemble.log`), as HyperQueue's output streaming does: the member reads
each job's output through pipes and appends it line by line, each line labelled with the job
(`<group>-<id>.out: ` or `.err: `). A job that names its own `stdout`/`stderr` (the Snakemake and
Parsl front doors do) writes there in every mode.

Names that become paths (a group such as `../../x`) are made safe first, so nothing the member
composes leaves the run's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

#: The member's `output` setting: where jobs that name no files of their own write.
OUTPUT_MODES = ("job", "group", "run")
RUN_LOG = "ensemble.log"
MAX_NAME = 100
READ_BYTES = 65536
#: A line longer than this is written in labelled chunks rather than held back.
MAX_LINE = 65536
MADE_DIRS = 1024

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    """`text` as one file name that stays in its directory: letters, digits, `.`, `_` and `-`,
    never starting with a dot, at most 100 characters."""
    return _UNSAFE.sub("_", text).lstrip(".")[:MAX_NAME] or "_"


class OutputError(OSError):
    """The job's output could not be opened: the job fails with this sentence."""


class JobOutput(Protocol):
    """One job's output, from before its tasks start to after they end."""

    def open(self) -> tuple[int, int]:
        """File descriptors for the next task's stdout and stderr; OutputError names the file.
        Called once per task, before each starts."""

    def started(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[str], None]) -> None:
        """The tasks run: close the parent's copies, begin reading if output is streamed."""

    def note(self, text: str) -> None:
        """A line from the member itself on the job's stderr (a task that could not start)."""

    def finish(self) -> list[str]:
        """The job ended: flush, close, remove empty files; the files holding its output."""

    def paths(self) -> list[str]:
        """The files holding the job's output now."""


class Outputs:
    """Hands each job its output, by the member's `output` setting."""

    def __init__(self, log_dir: Path, mode: str) -> None:
        self.log_dir = log_dir
        self.mode = mode
        #: This run's own directory under log_dir, made by `start`.
        self.run_dir = log_dir
        self._made_dirs: set[Path] = set()
        self._shared: dict[str, SharedLog] = {}

    def start(self) -> None:
        """Make log_dir and the run's directory in it; OutputError says why it cannot be."""
        try:
            _make_dir(self.log_dir, self._made_dirs)
            self.run_dir = _new_run_dir(self.log_dir)
        except OSError as error:
            raise OutputError(
                f"log_dir: cannot make a directory for the run's output in {self.log_dir}: "
                f"{error.strerror or error}"
            ) from None
        self._made_dirs.add(self.run_dir)

    def for_job(self, jobid: int, spec: JobSpec) -> JobOutput:
        label = f"{safe_name(spec.group)}-{jobid}"
        if spec.stdout or spec.stderr or self.mode == "job":
            stdout = _expand(spec.stdout, jobid) or self.run_dir / f"{label}.out"
            stderr = _expand(spec.stderr, jobid) or (
                stdout if spec.stdout else self.run_dir / f"{label}.err"
            )
            return JobFiles(stdout, stderr, self._made_dirs)
        name = RUN_LOG if self.mode == "run" else f"{safe_name(spec.group)}.log"
        shared = self._shared.get(name)
        if shared is None:
            shared = self._shared[name] = SharedLog(self.run_dir / name, self._made_dirs)
        return LabelledPipes(shared, label)

    def close(self) -> None:
        """Close the shared logs; the run's directory goes if nothing was left in it."""
        for shared in self._shared.values():
            shared.close()
        self._shared.clear()
        if self.run_dir != self.log_dir:
            with contextlib.suppress(OSError):  # not empty: the run's output stays
                self.run_dir.rmdir()


class JobFiles:
    """The job's own stdout and stderr files; those it created and left empty are removed."""

    def __init__(self, stdout: Path, stderr: Path, made_dirs: set[Path]) -> None:
        self._paths = [stdout] if stdout == stderr else [stdout, stderr]
        self._made_dirs = made_dirs
        self._created: list[Path] = []
        self._fds: list[int] = []
        self._kept: list[str] | None = None

    def open(self) -> tuple[int, int]:
        """The same two files for every task of the job."""
        if self._fds:
            return self._fds[0], self._fds[-1]
        for path in self._paths:
            try:
                _make_dir(path.parent, self._made_dirs)
                try:
                    fd = os.open(path, _APPEND | os.O_CREAT | os.O_EXCL, 0o666)
                    self._created.append(path)
                except FileExistsError:
                    fd = os.open(path, _APPEND)
            except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
                self._close_fds()
                reason = getattr(error, "strerror", None) or error
                raise OutputError(f"cannot open the job's output file {path}: {reason}") from None
            self._fds.append(fd)
        return self._fds[0], self._fds[-1]

    def started(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[str], None]) -> None:
        self._close_fds()

    def note(self, text: str) -> None:
        if self._fds:
            os.write(self._fds[-1], text.encode())

    def finish(self) -> list[str]:
        if self._kept is None:
            self._close_fds()
            for path in self._created:
                with contextlib.suppress(OSError):
                    if not path.stat().st_size:
                        path.unlink()
            self._kept = self.paths()
        return self._kept

    def paths(self) -> list[str]:
        if self._kept is not None:
            return self._kept
        return sorted(str(path) for path in self._paths if path.exists())

    def _close_fds(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


class SharedLog:
    """One file that many jobs' labelled output is appended to, opened at its first line."""

    def __init__(self, path: Path, made_dirs: set[Path]) -> None:
        self.path = path
        self._made_dirs = made_dirs
        self._fd: int | None = None

    def write(self, data: bytes) -> None:
        if self._fd is None:
            try:
                _make_dir(self.path.parent, self._made_dirs)
                self._fd = os.open(self.path, _APPEND | os.O_CREAT, 0o666)
            except OSError as error:
                raise OutputError(
                    f"cannot open the output file {self.path}: {error.strerror or error}"
                ) from None
        _write_all(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LabelledPipes:
    """The job's stdout and stderr read through pipes into a shared log, each line labelled.
    Every task has pipes of its own, so the lines of tasks never mix."""

    def __init__(self, shared: SharedLog, label: str) -> None:
        self._shared = shared
        self._prefixes = {"out": f"{label}.out: ".encode(), "err": f"{label}.err: ".encode()}
        self._streams: dict[int, str] = {}  # read end -> "out" or "err"
        self._partial: dict[int, bytes] = {}  # read end -> the line begun
        self._writers: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wrote = False
        self._finished = False

    def open(self) -> tuple[int, int]:
        """The pipes' write ends for the next task."""
        self._close_writers()
        try:
            for stream in ("out", "err"):
                read, write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                os.set_blocking(write, True)
                self._streams[read], self._partial[read] = stream, b""
                self._writers.append(write)
        except OSError as error:
            self._close_all()
            raise OutputError(f"cannot open a pipe for the job's output: {error}") from None
        return self._writers[0], self._writers[1]

    def started(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[str], None]) -> None:
        self._close_writers()
        self._loop = loop
        for fd in self._streams:
            loop.add_reader(fd, self._readable, fd, on_error)

    def note(self, text: str) -> None:
        self._write("err", [text.rstrip("\n").encode()])

    def finish(self) -> list[str]:
        if not self._finished:
            self._finished = True
            for fd in list(self._streams):
                while self._read(fd):
                    pass
            self._close_all()
        return self.paths()

    def paths(self) -> list[str]:
        return [str(self._shared.path)] if self._wrote else []

    def _readable(self, fd: int, on_error: Callable[[str], None]) -> None:
        try:
            self._read(fd)
        except Exception as error:  # a loop callback: nothing may escape into the loop
            on_error(str(error))

    def _read(self, fd: int) -> bool:
        """Read what is there; False once nothing more will come now (empty or closed)."""
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return False
        if not data:
            self._forget(fd)
            return False
        lines = (self._partial[fd] + data).split(b"\n")
        rest = lines.pop()
        if len(rest) >= MAX_LINE:
            lines.append(rest)
            rest = b""
        self._partial[fd] = rest
        if lines:
            self._write(self._streams[fd], lines)
        return True

    def _write(self, stream: str, lines: list[bytes]) -> None:
        prefix = self._prefixes[stream]
        self._shared.write(b"".join(prefix + line + b"\n" for line in lines))
        self._wrote = True

    def _forget(self, fd: int) -> None:
        """Stop reading a pipe; a line it left unfinished is written as it is."""
        stream, rest = self._streams.pop(fd), self._partial.pop(fd)
        if self._loop is not None:
            self._loop.remove_reader(fd)
        os.close(fd)
        if rest:
            self._write(stream, [rest])

    def _close_writers(self) -> None:
        for fd in self._writers:
            os.close(fd)
        self._writers.clear()

    def _close_all(self) -> None:
        for fd in list(self._streams):
            self._forget(fd)
        self._close_writers()


_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC


def _make_dir(path: Path, made: set[Path]) -> None:
    """Make the directory once; the set of those made is forgotten when it grows large (front
    doors may name a directory per job), which costs one more `mkdir` each."""
    if path not in made:
        if len(made) >= MADE_DIRS:
            made.clear()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory") from None
        made.add(path)


def _new_run_dir(log_dir: Path) -> Path:
    """A directory no other run has, named by the time: made here, so two runs that start in
    the same second (in one process or two) get two."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, number = log_dir / stamp, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1
            path = log_dir / f"{stamp}-{number}"


def _expand(path: str | None, jobid: int) -> Path | None:
    """Flux's `{{id}}` template in output paths."""
    return None if path is None else Path(path.replace("{{id}}", str(jobid)))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
