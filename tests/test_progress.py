"""The live progress of `ensemble run`: the numbers per group, rich's bars on a terminal, plain
lines elsewhere."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensemble_core import progress
from ensemble_core.ensemble import Ensemble
from ensemble_core.members import create_member
from ensemble_core.progress import GroupProgress, LineDisplay, group_progress, planned_jobs
from ensemble_core.rules.loader import parse

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples" / "ensembles"

#: Two jobs killed for memory once each and resubmitted, four quick ones, one that fails.
MIXED = """
jobs:
  - name: hungry
    command: python3 -c "import time; block = bytearray(150 * 2**20); time.sleep(0.5)"
    memory: 100
    count: 2
  - {name: quick, command: "true", count: 4}
  - {name: broken, command: "false"}
rules:
  - {trigger: start, action: {name: submit, label: hungry}}
  - {trigger: start, action: {name: submit, label: quick}}
  - {trigger: start, action: {name: submit, label: broken}}
  - trigger: job-oom
    action: {name: resubmit, resources: {mem_mb: "x2"}, repetitions: 1}
"""


def test_rows_count_logical_jobs_and_a_resubmission_as_a_retry(tmp_path):
    member = create_member("local", cores=2, log_dir=str(tmp_path / "logs"))
    config = parse(MIXED, "mixed.yaml")
    ensemble = Ensemble(member, config)
    ensemble.start()
    try:
        assert ensemble.wait(60)
    finally:
        ensemble.close()
    rows = {row.group: row for row in group_progress(ensemble.snapshot(), planned_jobs(config))}
    assert rows == {
        "broken": GroupProgress("broken", 1, 0, 0, 1, 0, 1),
        "hungry": GroupProgress("hungry", 2, 0, 2, 0, 2, 2),
        "quick": GroupProgress("quick", 4, 0, 4, 0, 0, 4),
    }
    assert rows["hungry"].line() == "hungry 2/2 ended (2 done, 0 failed), 0 running, 2 retried"


def test_the_bar_total_is_known_from_the_start_rules_before_any_job_runs():
    config = parse((EXAMPLES / "hello-world.yaml").read_text(), "hello-world.yaml")
    planned = planned_jobs(config)
    assert planned == {"sleep": 5}  # echo is submitted by a metric rule: not known in advance
    assert group_progress({"groups": {}}, planned) == [GroupProgress("sleep", 0, 0, 0, 0, 0, 5)]
    started = {"groups": {"sleep": {"submitted": 2, "running": 2}}}
    assert group_progress(started, planned)[0].total == 5


def test_plain_lines_are_written_when_the_counts_change_and_not_too_often():
    lines: list[str] = []
    display = LineDisplay(lines.append, interval=0)
    running = [GroupProgress("a", 3, 1, 0, 0, 0, 3)]
    display.update(running)
    display.update(running)
    display.update([GroupProgress("a", 3, 0, 3, 0, 0, 3)])
    assert lines == [
        "progress: a 0/3 ended (0 done, 0 failed), 1 running, 0 retried",
        "progress: a 3/3 ended (3 done, 0 failed), 0 running, 0 retried",
    ]
    seldom: list[str] = []
    slow = LineDisplay(seldom.append, interval=60)
    slow.update(running)
    assert seldom == []


def test_progress_off_a_terminal_writes_plain_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "LINE_SECONDS", 0)
    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.05)
    stream = io.StringIO()
    member = create_member("local", cores=2, log_dir=str(tmp_path / "logs"))
    config = parse(MIXED, "mixed.yaml")
    ensemble = Ensemble(member, config)
    ensemble.start()
    shown = progress.Progress(ensemble, planned=planned_jobs(config), stream=stream)
    try:
        assert ensemble.wait(60)
        time.sleep(0.2)
    finally:
        shown.close()
        ensemble.close()
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("ensemble: progress: broken ") for line in lines)
    assert lines[-1].endswith("quick 4/4 ended (4 done, 0 failed), 0 running, 0 retried")
    assert "\x1b" not in stream.getvalue()


@pytest.mark.skipif(not hasattr(pty, "openpty"), reason="needs a pseudo-terminal")
def test_ensemble_run_on_a_terminal_shows_bars_with_the_log_above_them(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED.replace("count: 4", "count: 20"))
    primary, secondary = pty.openpty()
    command = [sys.executable, "-m", "ensemble_core.cli", "run", str(path), "-v", "--no-state"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=secondary, text=True
    )
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(primary)
    assert process.returncode == 0
    text = screen.decode()
    assert "\x1b[" in text  # drawn by rich: colours, cursor moves
    assert "quick" in text and "20/20" in text and "2 retried" in text and "1 failed" in text
    assert "rule 3 resubmit: attempt 2: memory_mb 200" in text  # a log line, kept whole
    assert stdout.splitlines()[0].split()[:2] == ["group", "submitted"]
