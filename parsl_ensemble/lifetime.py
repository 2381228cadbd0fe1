"""An executor that ends with its process: jobs cancelled, task files removed.

Parsl cleans up only when the script calls `parsl.dfk().cleanup()` (or leaves `with
parsl.load(...)`): its exit hook merely warns. A script killed with SIGTERM runs no Python at
all, so its jobs ran on and its task files stayed. While an EnsembleExecutor runs, SIGTERM
therefore ends the script as an exception would (SystemExit, status 143: `finally` blocks and
`with` exits run), and an exit hook shuts the executor down if the script did not. The hook
runs when the main thread ends, before the interpreter stops its thread pools (which the
executor still needs to resolve its Futures). A SIGTERM handler the program set itself is left
alone.

Python runs a signal's handler on the main thread only, while the kernel hands a process's
signal to any of its threads: one returning from fork, or unblocking signals after it, may take
it first. The main thread, waiting for a Future, is then not woken, and the script would run on
as if the signal never came (about one SIGTERM in a hundred, with the executor's thread starting
jobs). `MainThreadDelivery` sends such a signal on to the main thread.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any


class ExitGuard:
    """Calls `shutdown` when the interpreter exits; turns SIGTERM into SystemExit meanwhile."""

    _active = 0  # guards in place: the SIGTERM handler stays while any is

    def __init__(self, shutdown: Callable[[], None]) -> None:
        self._shutdown: Callable[[], None] | None = shutdown
        _when_main_thread_ends(self._at_exit)
        if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_signal)
            MainThreadDelivery.start()
        ExitGuard._active += 1

    def remove(self) -> None:
        """The executor shut down by itself: no hook, and SIGTERM as it was once no guard is."""
        if self._shutdown is None:
            return
        self._shutdown = None
        ExitGuard._active -= 1
        if (
            not ExitGuard._active
            and _in_main_thread()
            and signal.getsignal(signal.SIGTERM) is _exit_on_signal
        ):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            MainThreadDelivery.stop()

    def _at_exit(self) -> None:
        if self._shutdown is not None:
            self._shutdown()


def _exit_on_signal(signum: int, frame: Any) -> None:
    MainThreadDelivery.handled += 1
    raise SystemExit(128 + signum)


class MainThreadDelivery:
    """Sends SIGTERM on to the main thread when another thread took it and the handler did not
    run soon after.

    The interpreter's own handler writes each signal's number to the wakeup pipe, from whichever
    thread took it; a thread of ours reads the pipe. If `_exit_on_signal` has not run within
    `GRACE` seconds, `pthread_kill` delivers SIGTERM to the main thread itself: its wait is
    interrupted and the handler runs. A program that set a wakeup pipe of its own (asyncio's
    signal handlers do) keeps it, and this stays off.
    """

    #: How long the main thread has to run the handler itself.
    GRACE = 0.5
    #: Times `_exit_on_signal` ran.
    handled = 0
    _wake = -1  # the pipe's end that the interpreter writes to, while this is on

    @classmethod
    def start(cls) -> None:
        if cls._wake != -1:
            return
        wakeup, wake = os.pipe()
        os.set_blocking(wake, False)
        theirs = signal.set_wakeup_fd(wake, warn_on_full_buffer=False)
        if theirs != -1:
            signal.set_wakeup_fd(theirs)  # not ours to replace
            os.close(wakeup)
            os.close(wake)
            return
        cls._wake = wake
        watcher = threading.Thread(
            target=cls._watch, args=(wakeup,), name="ensemble-sigterm", daemon=True
        )
        watcher.start()

    @classmethod
    def stop(cls) -> None:
        """Puts the wakeup pipe away, if it is still ours; its watcher ends at its close."""
        if cls._wake == -1:
            return
        current = signal.set_wakeup_fd(-1)
        if current not in (-1, cls._wake):
            signal.set_wakeup_fd(current)  # one set since is not ours to remove
        os.close(cls._wake)
        cls._wake = -1

    @classmethod
    def _watch(cls, wakeup: int) -> None:
        seen = cls.handled
        with open(wakeup, "rb", buffering=0) as pipe:
            while numbers := pipe.read(64):
                if signal.SIGTERM not in numbers:
                    continue
                deadline = time.monotonic() + cls.GRACE
                while cls.handled == seen and time.monotonic() < deadline:
                    time.sleep(0.02)
                if cls.handled == seen:
                    # Its number comes through the pipe too; the handler then runs once.
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
                seen = cls.handled


def _when_main_thread_ends(hook: Callable[[], None]) -> None:
    """`threading._register_atexit` (as concurrent.futures uses it): run before the interpreter
    joins threads and closes pools; plain `atexit` where it is missing."""
    register = getattr(threading, "_register_atexit", atexit.register)
    register(hook)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
