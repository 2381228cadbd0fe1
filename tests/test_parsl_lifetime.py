"""The executor's SIGTERM guard shares the process's wakeup pipe with the program politely.

(That SIGTERM ends a script, whichever thread takes it, is tested in test_signals.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble_core.testing.processes import threads_of
from ensemble_core.testing.waiting import eventually
from parsl_ensemble.lifetime import ExitGuard, MainThreadDelivery

ROOT = Path(__file__).parents[1]


@pytest.fixture
def default_sigterm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SIGTERM as a script has it before its first executor, put back afterwards: Snakemake's
    scheduler, run in this process by an earlier test, leaves its handler set."""
    monkeypatch.setattr(ExitGuard, "_active", 0)
    monkeypatch.setattr(MainThreadDelivery, "_watch", None)
    handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wakeup = signal.set_wakeup_fd(-1)
    yield
    signal.signal(signal.SIGTERM, handler)
    signal.set_wakeup_fd(wakeup)


def test_the_guard_sets_a_wakeup_pipe_and_removes_it(default_sigterm: None) -> None:
    guard = ExitGuard(lambda: None)
    ours = signal.set_wakeup_fd(-1)
    assert ours != -1
    signal.set_wakeup_fd(ours)
    guard.remove()
    assert signal.set_wakeup_fd(-1) == -1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_wakeup_pipe_the_program_set_is_kept(default_sigterm: None) -> None:
    theirs, theirs_written = os.pipe()
    os.set_blocking(theirs_written, False)
    signal.set_wakeup_fd(theirs_written)
    try:
        guard = ExitGuard(lambda: None)
        assert signal.set_wakeup_fd(theirs_written) == theirs_written
        guard.remove()
        assert signal.set_wakeup_fd(theirs_written) == theirs_written
    finally:
        os.close(theirs)
        os.close(theirs_written)


def test_one_set_after_the_guard_is_left_when_it_goes(default_sigterm: None) -> None:
    guard = ExitGuard(lambda: None)
    later, later_written = os.pipe()
    os.set_blocking(later_written, False)
    signal.set_wakeup_fd(later_written)  # as asyncio's add_signal_handler does
    try:
        guard.remove()
        assert signal.set_wakeup_fd(-1) == later_written
    finally:
        os.close(later)
        os.close(later_written)


SCRIPT = """
import threading, time
from parsl_ensemble.lifetime import ExitGuard
guard = ExitGuard(lambda: None)
threading.Thread(target=time.sleep, args=(60,), name="other", daemon=True).start()
runs = 0
try:
    print(threading.get_native_id(), flush=True)  # the signal may come as soon as it is read
    threading.Event().wait()
except SystemExit:
    runs += 1
try:
    time.sleep(1.5)  # a second SystemExit would come within the grace and a half
except SystemExit:
    runs += 1
print(runs, flush=True)
"""


@pytest.mark.parametrize("taker", ["main", "other"])
def test_sigterm_raises_in_the_main_thread_once_whichever_thread_takes_it(taker: str) -> None:
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert script.stdout is not None
    main = int(script.stdout.readline())
    assert eventually(lambda: len(threads_of(script.pid)) >= 3, 10)
    threads = threads_of(script.pid)
    other = next(tid for tid in reversed(threads) if tid != main)
    os.kill(main if taker == "main" else other, signal.SIGTERM)
    out, _ = script.communicate(timeout=10)
    assert out.split() == ["1"]
