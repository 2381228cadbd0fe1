"""`ensemble` as a user types it: each example's promised counts, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples" / "ensembles").glob("*.yaml"))
ENSEMBLE = [sys.executable, "-m", "ensemble_core.cli"]


def ensemble(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENSEMBLE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def promise(path: Path) -> dict:
    """The `# expect: {...}` comment of an example."""
    match = re.search(r"^# expect: (\{.*\})$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} has no '# expect:' comment"
    return json.loads(match.group(1))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_gives_the_counts_its_comment_promises(path, tmp_path):
    expected = promise(path)
    result = ensemble("run", str(path), "--json", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["exit"] == expected["exit"], result.stderr
    assert result.returncode == (1 if expected["exit"] == "limit" else 0)
    for group, counts in expected["groups"].items():
        for key, value in counts.items():
            assert report["groups"][group].get(key, 0) == value, (group, key, report["groups"])
    performed: dict[str, int] = {}
    for action in report["actions"]:
        performed[action["action"]] = performed.get(action["action"], 0) + 1
    for action, count in expected.get("actions", {}).items():
        assert performed.get(action) == count, report["actions"]


def test_summary_table_and_extra_rules_by_name(tmp_path):
    example = ROOT / "examples" / "ensembles" / "retry-oom.yaml"
    text = example.read_text().replace("  - trigger: job-oom\n", "  - trigger: never\n", 0)
    spec = tmp_path / "only-jobs.yaml"
    spec.write_text(text.split("\nrules:")[0] + "\nrules:\n  - trigger: start\n"
                    "    action: {name: submit, label: hungry}\n")  # fmt: skip
    result = ensemble("run", str(spec), "--rules", "retry-oom", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["group", "submitted", "running", "success"]
    assert lines[2].split()[:4] == ["hungry", "2", "0", "1"]
    assert "resubmit [hungry]" in result.stdout
    assert lines[-1].startswith("member local: nodes 1, max_nodes 1, cores_per_node ")


BAD_INPUTS = {
    "syntax": ("rules:\n  - trigger: start\n   action: [\n", ":3: YAML syntax error"),
    "trigger": (
        "rules:\n  - trigger: job-exploded\n    action: {name: grow}\n",
        ":2: rules[0].trigger: unknown trigger 'job-exploded': use start, interval, metric",
    ),
    "action": (
        "rules:\n  - trigger: start\n    action: {name: explode}\n",
        ":3: rules[0].action.name: Input should be 'submit', 'resubmit', 'cancel', 'grow'",
    ),
    "when": (
        "rules:\n  - trigger: metric\n    name: count.a.success\n    when: soon\n"
        "    action: {name: grow}\n",
        ":4: rules[0].when: when: 'soon' is not a number (means ==) or a comparison",
    ),
    "group": (
        "jobs:\n  - {name: a, command: 'true'}\nrules:\n  - trigger: start\n"
        "    action: {name: submit, label: b}\n",
        ":5: rules[0].action.label: submit of unknown job group 'b' (groups: a)",
    ),
    "count": (
        "jobs:\n  - {name: a, command: 'true', count: -2}\nrules: []\n",
        ":2: jobs[0].count: Input should be greater than or equal to 0",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name, tmp_path):
    text, expected = BAD_INPUTS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    for command in ("run", "validate"):
        result = ensemble(command, str(path), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr == f"ensemble: {path}{expected}" + result.stderr.split(expected)[1]
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unreadable_file_and_unknown_member(tmp_path):
    result = ensemble("run", "missing.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("ensemble: missing.yaml: no such file, and no shared rule")
    directory = tmp_path / "adir.yaml"
    directory.mkdir()
    result = ensemble("run", str(directory), cwd=tmp_path)
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "cannot read it" in result.stderr
    example = ROOT / "examples" / "ensembles" / "hello-world.yaml"
    result = ensemble("run", str(example), "--member", "slurmz", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'slurmz'" in result.stderr


def test_ctrl_c_cancels_everything_and_exits_130(tmp_path):
    marker = f"ensemble-ctrl-c-{os.getpid()}"
    path = tmp_path / "long.yaml"
    path.write_text(
        f"jobs:\n  - name: long\n    command: bash -c 'exec -a {marker} sleep 300'\n"
        "    count: 3\nrules:\n  - trigger: start\n    action: {name: submit, label: long}\n"
    )
    process = subprocess.Popen(
        [*ENSEMBLE, "run", str(path), "--json"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    while not _processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes(marker), "the jobs should have started"
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    report = json.loads(stdout)
    assert report["exit"] == "interrupted"
    assert report["groups"]["long"]["cancelled"] == 3
    time.sleep(0.3)
    assert _processes(marker) == []


def test_schema_validate_and_translate(tmp_path):
    schema = json.loads(ensemble("schema", cwd=tmp_path).stdout)
    assert "rules" in schema["properties"]
    result = ensemble("validate", "retry-oom", str(EXAMPLES[0]), cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "retry-oom: ok (0 job groups, 1 rules)"
    spec = tmp_path / "job.yaml"
    spec.write_text("command: [echo, hi]\nmemory_mb: 100\n")
    result = ensemble("translate", "--to", "flux", str(spec), cwd=tmp_path)
    assert json.loads(result.stdout)["tasks"][0]["command"] == ["echo", "hi"]
    assert "not carried to flux: memory_mb" in result.stderr


def _processes(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith(marker):
            found.append(pid)
    return found
