"""`ensemble` as a user types it: each example's promised counts, bad input, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble_core.testing.processes import processes_with
from ensemble_core.testing.waiting import eventually

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
        ":2: jobs[0].count: must be at least 0 (got -2)",
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
    assert "adir.yaml: is a directory, not a file" in result.stderr
    example = ROOT / "examples" / "ensembles" / "hello-world.yaml"
    result = ensemble("run", str(example), "--member", "slurmz", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'slurmz'" in result.stderr


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_cancels_everything_and_exits_128_plus_it(tmp_path, signum, status):
    marker = f"ensemble-signal-{signum}-{os.getpid()}"
    process = _run_sleepers(tmp_path, marker, count=3, cores=3)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert process.returncode == status
    assert stderr == f"ensemble: interrupted by {name}: its jobs were cancelled\n"
    report = json.loads(stdout)
    assert (report["exit"], report["reason"]) == ("interrupted", f"interrupted ({name})")
    assert report["groups"]["long"]["cancelled"] == 3
    assert eventually(lambda: processes_with(marker) == [], 10), processes_with(marker)


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_while_the_file_loads_ends_with_one_line(tmp_path, signum, status):
    """The handlers are in place before the file is read: a 2 MB file takes about a second to
    validate, and a signal in that second ends the command with one line, no traceback."""
    path = tmp_path / "big.yaml"
    groups = [f"  - {{name: g{i}, command: 'true', count: 0}}" for i in range(12_000)]
    rules = [
        f"  - {{trigger: job-success, group: g{i}, action: {{name: submit, label: g{i}}}}}"
        for i in range(12_000)
    ]
    path.write_text("jobs:\n" + "\n".join(groups) + "\nrules:\n" + "\n".join(rules) + "\n")
    process = subprocess.Popen(
        [*ENSEMBLE, "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    eventually(lambda: _catches(process.pid, signal.SIGTERM), 20, every=0.005)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert (process.returncode, stdout) == (status, "")
    assert stderr == f"ensemble: interrupted by {name} before any job started\n"


def test_a_signal_stops_a_large_queue_at_once_and_starts_no_more_jobs(tmp_path):
    """20,000 queued jobs, two running: the stop does not wait behind the queue, and no job
    starts after the signal."""
    marker = f"ensemble-queue-{os.getpid()}"
    process = _run_sleepers(tmp_path, marker, count=20_000, cores=2)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=30)  # it took 145 s behind the queued submits
    assert process.returncode == 130
    counts = json.loads(stdout)["groups"]["long"]
    assert (counts["finished"], counts["running"], counts["success"]) == (2, 0, 0), counts
    assert processes_with(marker) == []


def _run_sleepers(tmp_path: Path, marker: str, count: int, cores: int) -> subprocess.Popen:
    """`ensemble run --json` of `count` long jobs named `marker`, once `cores` of them run."""
    path = tmp_path / "long.yaml"
    path.write_text(
        f"jobs:\n  - name: long\n    command: bash -c 'exec -a {marker} sleep 300'\n"
        f"    count: {count}\nrules:\n  - trigger: start\n"
        "    action: {name: submit, label: long}\n"
    )
    process = subprocess.Popen(
        [*ENSEMBLE, "run", str(path), "--json", "--cores", str(cores)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    eventually(lambda: len(_sleeping(marker)) >= cores, 60)
    assert len(_sleeping(marker)) == cores, "the jobs should have started"
    return process


def _sleeping(marker: str) -> list[str]:
    """The jobs past their `exec -a`: a job's shell also names the marker until it execs, and
    one caught in the middle of its exec shows no command line for an instant."""
    return [command for command in processes_with(marker) if command.startswith(marker)]


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(mask & (1 << (signum - 1)))


def test_member_flags_are_checked_as_every_front_door_checks_them(tmp_path):
    example = ROOT / "examples" / "ensembles" / "hello-world.yaml"
    (tmp_path / "a-file").write_text("")
    cases = {
        ("--cores", "0"): "--cores: must be at least 1 (got 0)",
        ("--nodes", "2", "--max-nodes", "1"): "--max-nodes: must be at least nodes (2), got 1",
        ("--log-dir", "a-file"): "--log-dir: a-file is a file, not a directory",
        ("--image", "python"): "--image is a setting of the kubernetes member, but the member "
        "is 'local': drop it or choose the kubernetes member (--member kubernetes)",
        ("--member", "flux", "--gpus", "1"): "--gpus is a setting of the local member",
    }
    for flags, message in cases.items():
        result = ensemble("run", str(example), *flags, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, ""), flags
        assert result.stderr.startswith(f"ensemble: {message}"), result.stderr
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "ensemble-logs").exists(), "no job may have run"


def test_a_member_error_at_start_exits_1_and_bad_input_2(tmp_path):
    example = ROOT / "examples" / "ensembles" / "hello-world.yaml"
    result = ensemble(
        "run",
        str(example),
        "--member",
        "flux",
        "--flux-uri",
        f"local://{tmp_path}/none",
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result.stderr
    assert result.stderr.startswith("ensemble: ") and "Traceback" not in result.stderr
    result = ensemble("run", str(example), "--cores", "-1", cwd=tmp_path)
    assert result.returncode == 2


def test_extra_rules_bring_their_limits_and_heartbeat(tmp_path):
    """`--rules FILE` merges as the front doors do: its limits apply to the whole run."""
    main = tmp_path / "loop.yaml"
    main.write_text(
        "jobs:\n  - {name: loop, command: 'true'}\nrules:\n  - trigger: start\n"
        "    action: {name: submit, label: loop}\n  - trigger: job-success\n"
        "    action: {name: submit, label: loop, repetitions: 100000}\n"
    )
    (tmp_path / "limits.yaml").write_text(
        "logging: {heartbeat: 2}\nlimits: {max_actions: 3}\nrules: []\n"
    )
    result = ensemble("run", str(main), "--rules", "limits.yaml", "--json", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert (result.returncode, report["exit"]) == (1, "limit"), result.stderr
    assert report["groups"]["loop"]["success"] <= 5, report["groups"]


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


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    process = subprocess.Popen(
        [*ENSEMBLE, "schema"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.close()  # before it prints: as `ensemble schema | true` would
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (141, b"")


def test_warm_workers_from_the_command_line(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(
        "jobs:\n  - {name: one, command: 'true', count: 3}\n"
        "rules:\n  - {trigger: start, action: {name: submit, label: one}}\n"
    )
    result = ensemble("run", str(path), "--workers", "1", "--json", "--no-state", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups"]["one"]["success"] == 3
    assert report["member"]["target_workers"] == 1
    refused = ensemble("run", str(path), "--worker-cores", "2", cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.startswith("ensemble: --worker-cores: only applies with workers set")
