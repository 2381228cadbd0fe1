"""The local member's lifeline: its reaper process and the pipe the reaper hangs on.

The local member's jobs end with the controller (`Member.jobs_end_with_controller`), also when
the controller is killed with SIGKILL and no code of it runs any more. So at `start` the member
starts one small reaper (`local_reaper`, a standard-library program run without `site`) in a
session of its own, and keeps the write end of a pipe whose read end is the reaper's stdin.
Every task the member starts carries the member's marker variable in its environment, which
whatever the task starts inherits. When the pipe closes without a `close` (the controller died,
however), the reaper ends every process carrying the marker (SIGTERM, then SIGKILL); on a
normal close it exits quietly.

Nothing is said to the reaper per job: the marker is part of the environment built once
(`local_environment`), so the lifeline costs the member no CPU per job. A reaper that ends while
the member runs (someone killed it) is started again, at most `RESTARTS` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from ensemble_core.errors import MemberError

log = logging.getLogger(__name__)

REAPER = Path(__file__).with_name("local_reaper.py")
#: Reapers started again after one ended while the member ran.
RESTARTS = 3
#: The longest `close` waits for the reaper to exit (it exits as soon as it reads `close`).
CLOSE_SECONDS = 5.0


def new_marker() -> str:
    """A variable name no other member uses: a nested run's tasks carry every ancestor's."""
    return f"ENSEMBLE_LOCAL_RUN_{os.urandom(8).hex()}"


class Lifeline:
    """The reaper of one member's jobs, from the member's `start` to its `close`."""

    def __init__(self, marker: str, run_dir: Path) -> None:
        self.marker = marker
        self.run_dir = run_dir.absolute()  # a reaper started again later may see another cwd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        self._pidfd = -1
        self._restarts = RESTARTS

    @property
    def pid(self) -> int | None:
        """The reaper's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the reaper; MemberError if it cannot start."""
        self._loop = loop
        self._spawn()

    async def close(self) -> None:
        """Tell the reaper the jobs are ended, and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        pidfd, self._pidfd = self._pidfd, -1
        if pidfd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(pidfd)  # its end is awaited below, not an early end
        with contextlib.suppress(OSError):  # a reaper gone already: nothing to tell
            os.write(self._pipe, b"close\n")
        os.close(self._pipe)
        try:
            await _exit_of(process, pidfd)
        except (TimeoutError, subprocess.TimeoutExpired):
            log.warning("local member: its reaper did not exit when told: killing it")
            process.kill()
            process.wait()
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _spawn(self) -> None:
        read, write = os.pipe()  # both ends close on exec: no task inherits them
        command = [sys.executable, "-S", "-I", str(REAPER), self.marker, str(os.getpid()),
                   str(self.run_dir)]  # fmt: skip
        try:
            process = subprocess.Popen(
                command, stdin=read, stdout=subprocess.DEVNULL, start_new_session=True
            )
        except (OSError, ValueError) as error:
            os.close(write)
            raise MemberError(
                f"local member: cannot start its reaper with {sys.executable or 'no Python'} "
                f"(it ends the jobs if this process is killed): {error}"
            ) from None
        finally:
            os.close(read)
        self._process, self._pipe = process, write
        try:
            self._pidfd = os.pidfd_open(process.pid)
        except OSError:
            return  # no pidfds here: a reaper that ends early is not noticed (close still works)
        assert self._loop is not None
        self._loop.add_reader(self._pidfd, self._ended)

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    def _ended(self) -> None:
        """The reaper ended while the member runs: start another (a loop callback: nothing may
        escape into the loop)."""
        process = self._process
        assert process is not None
        self._unwatch()
        os.close(self._pipe)
        status = process.wait()
        self._process = None
        if not self._restarts:
            log.error(
                "local member: its reaper ended again (status %s): the jobs running now would "
                "outlive this process if it were killed",
                status,
            )
            return
        self._restarts -= 1
        log.warning("local member: its reaper ended (status %s): starting another", status)
        try:
            self._spawn()
        except MemberError as error:
            log.error("%s", error)


async def _exit_of(process: subprocess.Popen[bytes], pidfd: int) -> None:
    """Wait (at most CLOSE_SECONDS) until `process` exits, and reap it: on the loop through its
    pidfd, which is readable from the moment it exits (Popen's own wait with a timeout polls,
    sleeping ever longer, which made every close wait several ms more than the reaper took)."""
    if pidfd < 0:  # no pidfds here
        await asyncio.to_thread(process.wait, CLOSE_SECONDS)
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await exited
    finally:
        loop.remove_reader(pidfd)
    process.wait()  # it has exited: this only reaps it
