"""Starting one task of the local member: a process in a session of its own.

`os.posix_spawnp` where it can: it converts the environment and looks the program up in C, where
`subprocess.Popen` does both in Python, a loop over every variable and every directory of PATH,
which was most of the controller's CPU per short job (docs/performance.md). Popen where
posix_spawn cannot do what the task needs: a working directory of its own (posix_spawn has no
`chdir` before Python 3.13), or a PATH of its own (`posix_spawnp` looks the program up in the
controller's). Both give the task /dev/null for stdin and the given descriptors for stdout and
stderr; the descriptors Python opens are not inherited (PEP 446), so the task gets no others.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

_SPAWN = hasattr(os, "posix_spawnp")


def spawn(
    command: Sequence[str],
    environment: Mapping[bytes, bytes],
    cwd: str | None,
    stdout: int,
    stderr: int,
) -> int:
    """Start the task; its pid. OSError (or ValueError) if it cannot start."""
    if _SPAWN and cwd is None and environment.get(b"PATH") == os.environb.get(b"PATH"):
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, stdout, 1),
            (os.POSIX_SPAWN_DUP2, stderr, 2),
        ]
        return os.posix_spawnp(
            command[0], list(command), environment, file_actions=actions, setsid=True
        )
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    process.returncode = 0  # reaped through its pidfd by the member, not by Popen
    return process.pid
