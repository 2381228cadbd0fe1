"""The processes of this machine: by what their command line holds, where they work, or whose
children they are, and their threads; how tests (and the soak) see that nothing a run started
is left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def processes_with(text: str, besides: int = -1) -> list[str]:
    """Command lines (arguments joined by spaces) of the processes that contain `text`, but this
    process and `besides`."""
    return [command for pid, command in _processes() if text in command and pid != besides]


def processes_in(directory: str | os.PathLike[str]) -> list[str]:
    """Command lines of the processes whose working directory is `directory`, but this one."""
    wanted = os.fspath(directory)
    return [command for pid, command in _processes() if _cwd(pid) == wanted]


def children_of(parent: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `parent`."""
    return [(pid, command) for pid, command in _processes() if _parent(pid) == parent]


def threads_of(pid: int) -> list[int]:
    """The ids of process `pid`'s threads, the main one (`pid`) first."""
    return sorted(int(task) for task in os.listdir(f"/proc/{pid}/task"))


def _processes() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every process but this one (kernel threads have none: left out)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command:
            yield int(entry.name), command.strip()


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
