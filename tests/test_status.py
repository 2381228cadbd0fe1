"""`ensemble status` and `ensemble action` as a user types them, against a real `ensemble run`.

The run is a real process on the local member; status and actions reach it through the control
socket in its state directory, and once it has ended (or was killed) status reads its journal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ensemble_core.control.client import ask
from ensemble_core.control.unix_socket import SOCKET_NAME, socket_address
from ensemble_core.errors import ConfigError
from ensemble_core.testing.waiting import eventually

ENSEMBLE = [sys.executable, "-m", "ensemble_core.cli"]

#: Jobs that wait on a file the test writes, so the run lasts exactly as long as the test needs.
HELD = """
member: {{cores: 1, max_nodes: 4}}
jobs:
  - name: work
    command: sh -c 'while [ ! -e {release} ]; do sleep 0.05; done'
    count: 2
  - name: extra
    command: 'true'
    count: 3
rules:
  - trigger: start
    action: {{name: submit, label: work}}
"""


def ensemble(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*ENSEMBLE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def start_held_run(
    tmp_path: Path, state: Path | None = None
) -> tuple[subprocess.Popen, Path, Path]:
    """A running `ensemble run` whose jobs wait for `release`; its state directory."""
    release = tmp_path / "release"
    path = tmp_path / "held.yaml"
    path.write_text(HELD.format(release=release))
    state = state or tmp_path / ".ensemble-state" / "held.yaml"
    process = subprocess.Popen(
        [*ENSEMBLE, "run", str(path), "--json", "--state", str(state), "--log-dir", "logs"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not _listening(state / SOCKET_NAME):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the control socket never appeared"
        time.sleep(0.05)
    return process, state, release


def _listening(path: Path) -> bool:
    """Whether the control socket takes connections: its file appears at bind, before listen
    (a loaded CI was refused in between)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as connection, socket_address(path) as address:
        try:
            connection.connect(address)
        except ConnectionRefusedError:
            return False
    return True


def status_of(state: Path, cwd: Path) -> dict:
    result = ensemble("status", str(state), "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_and_actions_steer_a_running_ensemble(tmp_path):
    process, state, release = start_held_run(tmp_path)
    try:
        assert stat.S_IMODE((state / SOCKET_NAME).stat().st_mode) == 0o600
        status = status_of(state, tmp_path)
        assert status["controller"] == "running"
        assert status["groups"]["work"]["submitted"] == 2
        assert status["queue"]["running"] + status["queue"]["pending"] == 2
        assert status["member"]["nodes"] == 1
        assert status["recent_actions"][0]["detail"] == "2 x work"

        grown = ensemble("action", str(state), "grow", "2", cwd=tmp_path)
        assert grown.returncode == 0, grown.stderr
        assert re.fullmatch(r"grow at \d+\.\ds: grew by 2 node\(s\) to 3\n", grown.stdout)
        submitted = ensemble("action", str(state), "submit", "extra", "1", "--json", cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr
        [entry] = json.loads(submitted.stdout)["recorded"]
        assert (entry["rule"], entry["trigger"], entry["detail"]) == (-1, "operator", "1 x extra")

        text = ensemble("status", str(state), cwd=tmp_path).stdout
        assert text.splitlines()[0].startswith(f"{tmp_path / 'held.yaml'}: running for ")
        assert "member local: nodes 3, max_nodes 4" in text
        assert "rule -1 grow at " in text and "rule -1 submit [extra] at " in text
    finally:
        release.touch()
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["groups"]["extra"]["success"] == 1
    assert report["member"]["nodes"] == 3
    assert not (state / SOCKET_NAME).exists()

    ended = status_of(state, tmp_path)
    assert (ended["controller"], ended["exit"]) == ("ended", "completed")
    assert ended["groups"]["extra"]["success"] == 1 and ended["jobs"] == {"success": 3}
    assert [a["action"] for a in ended["recent_actions"]] == ["submit", "grow", "submit"]
    late = ensemble("action", str(state), "grow", cwd=tmp_path)
    assert (late.returncode, late.stdout) == (1, "")
    assert late.stderr == (
        f"ensemble: {state}: the run recorded here has ended (completed): nothing to act on\n"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["submit", "nope"], "submit: no job group 'nope' (the groups: extra, work)"),
        (["grow", "x"], "grow: 'x' is not a count (grow [N [MEMBER]]: add N nodes (default 1)"),
        (["shrink", "0"], "shrink: '0' is not allowed here (shrink [N [MEMBER]]: remove N nodes"),
        (["cancel"], "cancel needs a job group (cancel GROUP: cancel the active jobs of GROUP)"),
        (["terminate", "now"], "action terminate: 'now' is one argument too many"),
    ],
    ids=["unknown-group", "not-a-count", "zero", "no-group", "too-many"],
)
def test_a_bad_action_is_one_line_and_changes_nothing(tmp_path, arguments, message):
    process, state, release = start_held_run(tmp_path)
    try:
        result = ensemble("action", str(state), *arguments, cwd=tmp_path)
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith(f"ensemble: {message}"), result.stderr
        assert result.stderr.count("\n") == 1
        assert status_of(state, tmp_path)["action_counts"] == [
            {"rule": 0, "action": "submit", "count": 1}
        ]
    finally:
        release.touch()
        process.communicate(timeout=60)


def test_a_killed_controller_is_read_from_its_journal(tmp_path):
    process, state, release = start_held_run(tmp_path)
    try:
        time.sleep(0.5)  # the journal is written at most FLUSH_SECONDS after a change
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        status = status_of(state, tmp_path)
        assert (status["controller"], status["exit"]) == ("not running", None)
        assert status["jobs"] == {"open": 2}
        assert status["queue"]["pending"] + status["queue"]["running"] == 2
        text = ensemble("status", str(state), cwd=tmp_path).stdout
        assert f"`ensemble attach {state}` follows it again" in text.splitlines()[0]
        result = ensemble("action", str(state), "terminate", cwd=tmp_path)
        assert result.returncode == 1
        assert "no controller is following this run (it was killed or detached)" in result.stderr
    finally:
        release.touch()


def test_status_finds_the_one_run_recorded_here_or_says_how_to_name_it(tmp_path):
    nothing = ensemble("status", cwd=tmp_path)
    assert (nothing.returncode, nothing.stdout) == (2, "")
    assert nothing.stderr.startswith("ensemble: no ensemble state in ./.ensemble-state: give ")
    path = tmp_path / "one.yaml"
    path.write_text("jobs: [{name: a, command: 'true'}]\nrules:\n"
                    "  - {trigger: start, action: {name: submit, label: a}}\n")  # fmt: skip
    assert ensemble("run", str(path), "--no-state", cwd=tmp_path).returncode == 0
    assert ensemble("status", cwd=tmp_path).returncode == 2
    assert ensemble("run", str(path), cwd=tmp_path).returncode == 0
    found = ensemble("status", "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["groups"]["a"]["success"] == 1
    (tmp_path / "two.yaml").write_text(path.read_text())
    assert ensemble("run", "two.yaml", cwd=tmp_path).returncode == 0
    several = ensemble("status", cwd=tmp_path)
    assert several.returncode == 2
    assert several.stderr == (
        "ensemble: several runs are recorded here (.ensemble-state/one.yaml, "
        ".ensemble-state/two.yaml): name one of them\n"
    )
    wrong = ensemble("status", str(tmp_path), cwd=tmp_path)
    assert wrong.returncode == 2 and "no ensemble state here" in wrong.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another user")
def test_another_user_is_refused_even_when_the_socket_is_opened_to_all(tmp_path):
    reachable = Path(tempfile.mkdtemp(prefix="ensemble-status-"))  # not under 0700 directories
    reachable.chmod(0o755)
    process, state, release = start_held_run(tmp_path, reachable / "state")
    try:
        os.chmod(state / SOCKET_NAME, 0o666)  # as a directory made wide open would
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # a process of user `nobody` asks for the status
            os.close(read)
            try:
                os.setgid(65534)
                os.setuid(65534)
                answer = json.dumps(_raw_request(state, {"request": "status"}))
            except BaseException as error:  # said as JSON too: the assertion below shows it
                answer = json.dumps({"raised": repr(error)})
            os.write(write, answer.encode())
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read) as pipe:
            answer = json.loads(pipe.read())
        assert answer == {
            "ok": False,
            "error": "refused: this ensemble belongs to uid 0, not 65534",
        }
    finally:
        release.touch()
        process.communicate(timeout=60)
        shutil.rmtree(reachable)


def test_a_request_that_is_not_one_json_object_is_refused(tmp_path):
    process, state, release = start_held_run(tmp_path)
    try:
        assert _raw_request(state, b"grow please\n")["error"].startswith(
            "a request is one JSON object on one line"
        )
        assert _raw_request(state, {"request": "explode"}) == {
            "ok": False,
            "error": "unknown request 'explode': give 'status' or 'action'",
        }
        with pytest.raises(ConfigError, match="unknown action 'explode': give one of grow"):
            ask(state, {"request": "action", "name": "explode"})
    finally:
        release.touch()
        process.communicate(timeout=60)


def _raw_request(state: Path, request: dict | bytes) -> dict:
    line = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(30)
        with socket_address(state / SOCKET_NAME) as address:
            connection.connect(address)
        connection.sendall(line)
        return json.loads(connection.makefile("rb").readline())


def test_an_operator_routes_a_group_and_grows_a_member_by_name(tmp_path):
    release = tmp_path / "release"
    path = tmp_path / "two.yaml"
    path.write_text(
        f"""
members:
  small: {{name: local, cores: 1, log_dir: small-logs}}
  big: {{name: local, cores: 2, max_nodes: 2, log_dir: big-logs}}
default: small
jobs:
  - name: work
    command: sh -c 'while [ ! -e {release} ]; do sleep 0.05; done'
rules:
  - trigger: start
    action: {{name: submit, label: work}}
"""
    )
    state = tmp_path / "state"
    process = subprocess.Popen(
        [*ENSEMBLE, "run", str(path), "--json", "--state", str(state)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (state / SOCKET_NAME).exists():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr
            time.sleep(0.05)
        routed = ensemble("action", str(state), "route", "work", "big", "--json", cwd=tmp_path)
        assert routed.returncode == 0, routed.stderr
        (entry,) = json.loads(routed.stdout)["recorded"]
        assert (entry["action"], entry["rule"]) == ("route", -1)
        grown = ensemble("action", str(state), "grow", "1", "big", "--json", cwd=tmp_path)
        assert grown.returncode == 0, grown.stderr
        assert "grew by 1 node(s) to 2" in json.loads(grown.stdout)["recorded"][0]["detail"]
        submitted = ensemble("action", str(state), "submit", "work", "1", cwd=tmp_path)
        assert submitted.returncode == 0, submitted.stderr

        def one_runs_on_big() -> bool:
            return status_of(state, tmp_path).get("members", {}).get("big", {}).get("running") == 1

        assert eventually(one_runs_on_big, 30, every=0.1), status_of(state, tmp_path)
    finally:
        release.write_text("")
        process.communicate(timeout=60)
