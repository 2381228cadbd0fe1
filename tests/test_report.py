"""`ensemble report`: the HTML report of a real run, read from its state journal."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_core import report_html
from ensemble_core.ensemble import Ensemble
from ensemble_core.members import create_member
from ensemble_core.report_html import write_report
from ensemble_core.rules.loader import parse
from ensemble_core.state import StateJournal

RULES = """
member: {cores: 2, max_nodes: 3}
jobs:
  - name: hungry
    command: python3 -c "import time; block = bytearray(150 * 2**20); time.sleep(0.3)"
    memory: 100
  - {name: quick, command: "sleep 0.2", count: 4}
rules:
  - {trigger: start, action: {name: submit, label: hungry}}
  - {trigger: start, action: {name: submit, label: quick}}
  - trigger: job-oom
    action: {name: resubmit, resources: {mem_mb: "x2"}, repetitions: 2}
"""


def recorded_run(directory: Path) -> Path:
    """A real run on the local member, recorded in `directory`: one job resubmitted after an
    oom, four quick ones, and an operator's grow."""
    member = create_member("local", cores=2, max_nodes=3, log_dir=str(directory / "logs"))
    journal = StateJournal(directory / "state", command={"file": "report.yaml", "member": "local"})
    ensemble = Ensemble(member, parse(RULES, "report.yaml"), state=journal)
    ensemble.start()
    try:
        ensemble.request_action({"name": "grow", "value": 1})
        assert ensemble.wait(60)
    finally:
        ensemble.close()
    return directory / "state"


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return recorded_run(tmp_path_factory.mktemp("run"))


def charts(page: str) -> dict[str, list[dict]]:
    """The data of each plotly chart of the page, by its div id."""
    found = re.findall(r'Plotly\.newPlot\(\s*"(chart-\d)",\s*(\[.*?\]),\s*\{', page, re.DOTALL)
    return {div: json.loads(data) for div, data in found}


def test_the_report_is_one_offline_page_with_every_chart(state, tmp_path):
    output = tmp_path / "report.html"
    assert write_report(state, output) == 5
    page = output.read_text()
    assert page.count("<script") == 1 + 6  # plotly.js itself, then one per chart
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", page)  # nothing fetched
    assert "Plotly.newPlot" in page and len(page) < 6_000_000
    data = charts(page)
    assert sorted(data) == [f"chart-{index}" for index in range(6)]

    outcomes = {trace["name"]: trace for trace in data["chart-0"]}
    assert outcomes["success"]["y"] == ["hungry", "quick"]
    assert outcomes["success"]["x"] == [1, 4] and outcomes["retries"]["x"] == [1, 0]

    durations = {trace["name"]: sum(trace["y"]) for trace in data["chart-1"]}
    assert durations == {"hungry": 2, "quick": 4}  # attempts, binned
    assert {trace["name"] for trace in data["chart-2"]} == {"hungry", "quick"}

    timeline = {trace["name"]: trace for trace in data["chart-3"]}
    assert timeline["oom"]["y"] == ["hungry #1"] and timeline["oom"]["customdata"] == [1]
    assert timeline["success"]["y"].count("hungry #1") == 1
    assert sorted(set(timeline["waiting"]["y"])) == [
        "hungry #1",
        *(f"quick #{k}" for k in range(2, 6)),
    ]
    firings = timeline["rule firing"]
    marked = dict(zip(firings["text"], firings["y"], strict=True))
    assert marked["rule 2 (job-oom) resubmit: attempt 2: memory_mb 200"] == "hungry #1"
    assert marked["operator grow: grew by 1 node(s) to 2"] == "rule firings"

    [rules] = data["chart-4"]
    assert dict(zip(rules["y"], rules["x"], strict=True)) == {
        "operator: grow": 1,
        "rule 0: start → submit": 1,
        "rule 1: start → submit": 1,
        "rule 2: job-oom → resubmit": 1,
    }
    [sizes] = data["chart-5"]
    assert sizes["y"] == [1, 2, 2] and sizes["x"][0] == 0.0
    assert "<td>hungry</td><td>1</td><td>1</td><td>1</td>" in page  # jobs, success, retried


def test_ensemble_report_as_typed(state, tmp_path):
    command = [sys.executable, "-m", "ensemble_core.cli", "report", str(state), "-o", "r.html"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"r.html: the report of 5 job(s) recorded in {state}\n"
    assert (tmp_path / "r.html").stat().st_size > 1_000_000
    unwritable = subprocess.run(
        [*command[:-1], str(tmp_path / "missing" / "r.html")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (unwritable.returncode, unwritable.stdout) == (2, "")
    assert unwritable.stderr == (
        f"ensemble: {tmp_path / 'missing' / 'r.html'}: cannot write the report there "
        "(No such file or directory)\n"
    )


def test_a_long_run_shows_the_first_jobs_of_its_timeline(state, tmp_path, monkeypatch):
    monkeypatch.setattr(report_html, "TIMELINE_JOBS", 2)
    write_report(state, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "The first 2 of 5 jobs are shown." in page
    waiting = {trace["name"]: trace for trace in charts(page)["chart-3"]}["waiting"]
    assert sorted(set(waiting["y"])) == ["hungry #1", "quick #2"]


@pytest.mark.parametrize(
    ("said", "sizes"),
    [
        ("grew by 2 node(s) to 3", (1, 3)),
        ("grew by 1 node(s) to 3: max_nodes is 3", (2, 3)),
        ("shrank by 1 node(s) to 2 (only idle nodes are removed, never the last)", (3, 2)),
        ("MiniCluster default/flux size 2 -> 4 (min 1, max 4)", (2, 4)),
        ("MiniCluster default/flux stays at size 4 (min 1, max 4)", (4, 4)),
        ("flux member drained ranks 3: running jobs finish, no new ones start", None),
    ],
)
def test_member_sizes_are_read_where_the_member_says_them(said, sizes):
    assert report_html._sizes(said) == sizes
