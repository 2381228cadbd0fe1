"""An executor that ends with its process: jobs cancelled, task files removed.

Parsl cleans up only when the script calls `parsl.dfk().cleanup()` (or leaves `with
parsl.load(...)`): its exit hook merely warns. A script killed with SIGTERM runs no Python at
all, so its jobs ran on and its task files stayed. While an EnsembleExecutor runs, SIGTERM
therefore ends the script as an exception would (SystemExit, status 143: `finally` blocks and
`with` exits run), and an exit hook shuts the executor down if the script did not. The hook
runs when the main thread ends, before the interpreter stops its thread pools (which the
executor still needs to resolve its Futures). A SIGTERM handler the program set itself is left
alone.

The kernel may hand SIGTERM to another thread than the main one, whose wait for a Future
then goes on as if the signal never came (about one SIGTERM in a hundred while the executor's
thread starts jobs): `MainThreadDelivery` sends it on to the main thread.
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ensemble_core.signal_watch import SignalWatch


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
    run soon after (`ensemble_core.signal_watch`): if `_exit_on_signal` has not run within
    `GRACE` seconds, `pthread_kill` delivers SIGTERM to the main thread itself, whose wait is
    then interrupted. A program that set a wakeup pipe of its own keeps it, and this stays off.
    """

    #: How long the main thread has to run the handler itself.
    GRACE = 0.5
    #: Times `_exit_on_signal` ran.
    handled = 0
    _watch: SignalWatch | None = None
    _seen = 0  # `handled` when the last SIGTERM was seen to
    _owed = 0  # SIGTERMs this sent to the main thread, not yet seen in the pipe

    @classmethod
    def start(cls) -> None:
        if cls._watch is None:
            cls._seen = cls.handled
            cls._watch = SignalWatch.start(signal.SIGTERM, cls._see_to)

    @classmethod
    def stop(cls) -> None:
        if cls._watch is not None:
            cls._watch.stop()
            cls._watch = None

    @classmethod
    def _see_to(cls) -> None:
        """For each SIGTERM the pipe shows (or several shown at once)."""
        if cls._owed:  # one this sent: the main thread took it; count the run it makes
            cls._owed -= 1
            cls._ran(within=cls.GRACE)
        elif not cls._ran(within=cls.GRACE):
            cls._owed += 1
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    @classmethod
    def _ran(cls, within: float) -> bool:
        """Whether the handler ran since the last SIGTERM seen to (waiting up to `within`)."""
        deadline = time.monotonic() + within
        while cls.handled == cls._seen and time.monotonic() < deadline:
            time.sleep(0.02)
        ran, cls._seen = cls.handled != cls._seen, cls.handled
        return ran


def _when_main_thread_ends(hook: Callable[[], None]) -> None:
    """`threading._register_atexit` (as concurrent.futures uses it): run before the interpreter
    joins threads and closes pools; plain `atexit` where it is missing."""
    register = getattr(threading, "_register_atexit", atexit.register)
    register(hook)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
