"""`ensemble run --state/--fresh/--detach` and `ensemble attach`, as a user types them.

Resuming after a SIGKILL is tested with each member (tests/test_resume.py on the controller; the
members' own tests on the real queues); here: where the state goes, what is refused and how.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_cli import ensemble

ENSEMBLE = (
    "jobs:\n  - {name: a, command: 'true', count: 3}\n"
    "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
)


def write(tmp_path: Path, text: str = ENSEMBLE) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_a_run_is_recorded_beside_its_file_and_a_finished_one_starts_anew(tmp_path):
    path = write(tmp_path)
    for _ in range(2):
        result = ensemble("run", str(path), "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["groups"]["a"]["success"] == 3
        assert "resuming" not in result.stderr
    database = tmp_path / ".ensemble-state" / "run.yaml" / "state.db"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT outcome, count(*) FROM jobs GROUP BY outcome").fetchall() == [
            ("success", 3)
        ]


def test_no_state_records_nothing(tmp_path):
    path = write(tmp_path)
    result = ensemble("run", str(path), "--no-state", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / ".ensemble-state").exists()


def test_attach_to_a_run_that_ended_or_to_no_state_is_one_line(tmp_path):
    path = write(tmp_path)
    ensemble("run", str(path), "--state", str(tmp_path / "s"), cwd=tmp_path)
    ended = ensemble("attach", str(tmp_path / "s"), cwd=tmp_path)
    assert (ended.returncode, ended.stdout) == (2, "")
    assert ended.stderr == (
        f"ensemble: {tmp_path / 's'}: the run recorded here has ended; nothing to attach to "
        "(`ensemble run FILE` starts a new one)\n"
    )
    nothing = ensemble("attach", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert nothing.returncode == 2
    assert "no ensemble state here" in nothing.stderr


def test_detach_is_refused_for_jobs_that_end_with_the_controller(tmp_path):
    path = write(tmp_path)
    result = ensemble("run", str(path), "--detach", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "ensemble: --detach: the local member's jobs end with the controller; detach a run on "
        "--member flux or kubernetes\n"
    )


def test_an_unfinished_run_of_an_edited_file_is_not_resumed(tmp_path):
    path = write(tmp_path)
    state = tmp_path / "s"
    ensemble("run", str(path), "--state", str(state), cwd=tmp_path)
    with sqlite3.connect(state / "state.db") as db:  # as if the controller had been killed
        db.execute("DELETE FROM meta WHERE key = 'ended'")
    write(tmp_path, ENSEMBLE.replace("count: 3", "count: 4"))
    result = ensemble("run", str(path), "--state", str(state), cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert "holds an unfinished run of" in result.stderr and "--fresh" in result.stderr
    fresh = ensemble("run", str(path), "--state", str(state), "--fresh", "--json", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout)["groups"]["a"]["success"] == 4
