"""What `ensemble` does differently to start and end fast (cli.CollectorPause, cli.program):
the collector paused while a run starts runs again before the ensemble does; the exit without
Python's teardown still runs what is registered at exit, and leaves the teardown to Python
where code of the user's ran in the process."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
from pathlib import Path

from ensemble_core.cli import CollectorPause, _threads_to_wait_for

LEAVES_OPEN = """\
import atexit

NOTES = open("noted.txt", "w")  # never closed: Python's teardown flushes it
atexit.register(lambda: open("at-exit.txt", "w").write("ran\\n"))


def note(rule, group, job, ensemble):
    NOTES.write("noted\\n")
"""

ENSEMBLE = """\
jobs:
  - {name: one, command: 'true'}
rules:
  - {trigger: start, action: {name: submit, label: one}}
  - {trigger: job-success, action: {name: custom, function: 'leaves_open:note'}}
"""


def test_resume_restores_the_collector_once():
    assert gc.isenabled()
    collector = CollectorPause()
    assert not gc.isenabled()
    collector.resume()
    assert gc.isenabled()
    gc.disable()
    collector.resume()  # a second resume changes nothing
    assert not gc.isenabled()
    gc.enable()
    gc.unfreeze()


def test_a_collector_paused_before_stays_paused():
    gc.disable()
    try:
        CollectorPause().resume()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_custom_actions_files_are_flushed_and_its_exit_hooks_run(tmp_path: Path):
    (tmp_path / "leaves_open.py").write_text(LEAVES_OPEN)
    (tmp_path / "one.yaml").write_text(ENSEMBLE)
    done = subprocess.run(
        [sys.executable, "-m", "ensemble_core.cli", "run", "one.yaml", "--json", "--allow-custom"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["groups"]["one"]["success"] == 1
    assert (tmp_path / "noted.txt").read_text() == "noted\n"
    assert (tmp_path / "at-exit.txt").read_text() == "ran\n"


def test_a_thread_python_would_wait_for_is_seen():
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert _threads_to_wait_for()
    finally:
        release.set()
        worker.join()
    daemon = threading.Thread(target=release.wait, daemon=True)
    daemon.start()
    assert not _threads_to_wait_for()
