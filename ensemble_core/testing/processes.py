"""The processes of this machine whose command line holds a text: how tests (and the soak) see
that nothing a run started is left running."""

from __future__ import annotations

import os
from pathlib import Path


def processes_with(text: str, besides: int = -1) -> list[str]:
    """Command lines (arguments joined by spaces) of the processes that contain `text`, but this
    process and `besides`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), besides):
            continue
        try:
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in command:
            found.append(command.strip())
    return found
