"""Resident memory of every process, read from /proc in one pass (Linux).

Members that enforce memory limits sample it: the local member per job's process groups, a warm
worker per task's. Standard library only: a warm worker imports it and forks every task.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

PAGE_MB = resource.getpagesize() / 2**20


def resident_memory() -> Iterator[tuple[int, int, float]]:
    """(pid, process group, resident MB) of every process that can be read."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            yield int(entry.name), int(fields[2]), int(fields[21]) * PAGE_MB
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not a process's stat
