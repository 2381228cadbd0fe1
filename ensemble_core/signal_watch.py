"""A signal seen from whichever thread the kernel hands it to.

Python runs a signal's handler on the main thread only, between two of its instructions, while
the kernel hands a process's signal to any thread that does not block it; a thread returning
from fork, or unblocking signals after it, may take it first. The main thread, blocked in a read
or a wait, is then not woken, and the handler waits for whatever wakes it, which may never come.
The interpreter's own handler does run at once, in the thread that took the signal, and writes
the signal's number to the process's wakeup pipe: a thread reading that pipe sees every signal
that has a Python handler, whichever thread took it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable


class SignalWatch:
    """Calls `react` on a thread of its own each time `signum` comes (a Python handler for it
    must be set, or nothing is written to the pipe)."""

    def __init__(self, wake: int) -> None:
        self._wake = wake

    @classmethod
    def start(cls, signum: int, react: Callable[[], None]) -> SignalWatch | None:
        """From the main thread. None if the program set a wakeup pipe of its own (asyncio's
        signal handlers do): it keeps it, and nothing is watched."""
        wakeup, wake = os.pipe()
        os.set_blocking(wake, False)
        theirs = signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
        if theirs != -1:
            signal.set_wakeup_fd(theirs)  # not ours to replace
            os.close(wakeup)
            os.close(wake)
            return None
        thread = threading.Thread(
            target=_watch, args=(wakeup, signum, react), name="ensemble-signals", daemon=True
        )
        thread.start()
        return cls(wake)

    def stop(self) -> None:
        """From the main thread: puts the pipe away, if it is still the process's; the thread
        ends at its close."""
        current = signal.set_wakeup_fd(-1)
        if current not in (-1, self._wake):
            signal.set_wakeup_fd(current)  # one set since is not ours to remove
        os.close(self._wake)


def _watch(wakeup: int, signum: int, react: Callable[[], None]) -> None:
    with open(wakeup, "rb", buffering=0) as pipe:
        while numbers := pipe.read(64):
            if signum in numbers:
                react()
