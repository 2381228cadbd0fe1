"""Resume and detach on a real Flux instance: a new member adopts the jobs of one that is gone.

The member tests hand a second `FluxMember` the jobs of a first one (closed, which leaves its jobs
running as a killed controller does). The command-line tests SIGKILL `ensemble run --member flux
--state DIR` at chosen and at random points, run the same command again, and count on the
instance itself: every job of the run submitted once, every outcome right, and the rule that
reacts to the third success of `a` fired once in all. Skipped where Flux is absent.
"""

from __future__ import annotations

import asyncio
import errno
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from resume_scenarios import (
    ADOPTED_OUTCOMES,
    COUNTS,
    RUN,
    adoption,
    counts,
    kill,
)
from test_flux_integration import Session, eventlog, flux_instance

from ensemble_core.testing.waiting import eventually

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def flux_uri():
    with flux_instance("--test-size=1") as instance:
        yield instance.uri


def without_annotations(session: Session, jobid: int) -> list[tuple[str, float]]:
    return [key for key in session.delivered(jobid) if key[0] != "annotations"]


@pytest.fixture(params=["journal", "guest"])
def stream(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The member's event stream: the journal, or per-job eventlogs as a guest of a system
    instance gets them (the journal refused as it refuses a guest)."""
    if request.param == "guest":
        import flux.job

        class Refused(flux.job.JournalConsumer):
            def poll(self, timeout: float = -1.0) -> None:
                raise PermissionError(errno.EPERM, "Request requires owner credentials")

        monkeypatch.setattr(flux.job, "JournalConsumer", Refused)
    return request.param


def test_a_new_member_adopts_by_id_and_by_token_and_replays_each_eventlog(
    flux_uri: str, tmp_path: Path, stream: str
) -> None:
    """Jobs that ended, run, and are still to end while no member followed them; one found by its
    token alone; a token never submitted and an id whose jobspec holds another token are not
    the queue's. Each found job's events come after `adopt` returns, as its eventlog has them."""

    async def started(_: str) -> Session:
        session = Session(flux_uri)
        await session.member.start(session.emit)
        return session

    def output(token: str) -> dict[str, str]:
        return {"stdout": str(tmp_path / f"{token}.out")}

    session, ids, found, quiet = asyncio.run(adoption(started, output))
    assert found == ids and quiet
    outcomes = {token: session.record(jobid).outcome for token, jobid in ids.items()}
    assert outcomes == ADOPTED_OUTCOMES
    assert session.record(ids["exit3"]).exit_code == 3
    assert session.logs[ids["sleep"]] == [str(tmp_path / "sleep.out")]
    for jobid in ids.values():
        assert without_annotations(session, jobid) == eventlog(flux_uri, jobid)
    assert session.member.held == dict.fromkeys(session.member.held, 0)
    mode = {"journal": "job journal", "guest": "per-job eventlog watch"}[stream]
    assert session.member.describe()["events"] == mode


# `ensemble run --member flux --state DIR`, killed and run again ------------------------------

#: What the instance must hold in the end: each job of `RUN` once, with its real result.
EXPECTED = Counter({("a", "COMPLETED"): 6, ("b", "COMPLETED"): 1, ("c", "FAILED"): 1})


def ensemble(uri: str, cwd: Path, *args: str) -> subprocess.Popen:
    command = [str(BIN / "ensemble"), *args, "--json"]
    if args[0] == "run":
        command += ["--member", "flux", "--flux-uri", uri, "--state", "state"]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def jobs_of(uri: str, cwd: Path) -> list[tuple[str, str, str]]:
    """(group, state, result) of each job on the instance that ran in `cwd` (the directory of
    the `ensemble run` that submitted it): what the queue itself says."""
    import flux
    import flux.job

    handle = flux.Flux(uri)
    listing = flux.job.job_list(handle, max_entries=0, attrs=["state", "result"]).get_jobs()
    asks = [
        handle.rpc("job-manager.getattr", {"id": j["id"], "attrs": ["jobspec"]}) for j in listing
    ]
    jobs = []
    for job, ask in zip(listing, asks, strict=True):
        attributes = ask.get()["jobspec"]["attributes"]
        if attributes["system"].get("cwd") == str(cwd):
            info = flux.job.JobInfo(job)
            jobs.append((attributes["user"]["group"], info.state, info.result))
    return jobs


def ended(cwd: Path) -> bool:
    """Whether the run recorded in `cwd/state` ended (a controller killed after that point)."""
    with sqlite3.connect(cwd / "state" / "state.db") as db:
        return bool(db.execute("SELECT count(*) FROM meta WHERE key = 'ended'").fetchone()[0])


def check_the_run(uri: str, cwd: Path, report: dict | None) -> None:
    """Each job submitted once and ended as it should, on the instance and in the report (if
    the last run lived to print it); the metric rule fired once in all (one `b`)."""
    assert Counter((group, result) for group, _, result in jobs_of(uri, cwd)) == EXPECTED
    if report is None:
        return
    assert report["exit"] == "completed"
    assert counts(report) == COUNTS


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run.yaml").write_text(RUN)
    return tmp_path


def test_killed_during_submission_the_run_adopts_what_reached_flux(
    flux_uri: str, run_dir: Path
) -> None:
    """SIGKILL as soon as the first job is on the instance: others are in flight, and the ids
    the first run learned are written down only at its next flush (0.2 s): the second run
    finds those jobs by their token."""
    first = ensemble(flux_uri, run_dir, "run", "run.yaml")
    assert eventually(lambda: jobs_of(flux_uri, run_dir), 30, every=0.01), "timed out"
    kill(first)
    report = finished(ensemble(flux_uri, run_dir, "run", "run.yaml"))
    check_the_run(flux_uri, run_dir, report)


def test_jobs_that_end_while_no_controller_follows_fire_the_rule_after_the_restart(
    flux_uri: str, run_dir: Path
) -> None:
    """The controller is stopped (SIGSTOP) while `a` jobs run, three of them end meanwhile, and it
    is killed: the rule's trigger happened on the queue, its action never. The next run replays
    those ends and fires the rule, once."""
    first = ensemble(flux_uri, run_dir, "run", "run.yaml")
    running = lambda: [j for j in jobs_of(flux_uri, run_dir) if j[:2] == ("a", "RUN")]  # noqa: E731
    assert eventually(lambda: len(running()) >= 2, 30, every=0.01), "timed out"
    first.send_signal(signal.SIGSTOP)
    ended = lambda: [j for j in jobs_of(flux_uri, run_dir) if j[0] == "a" and j[2]]  # noqa: E731
    assert eventually(lambda: len(ended()) >= 3, 30, every=0.01), "timed out"
    kill(first)
    assert not [j for j in jobs_of(flux_uri, run_dir) if j[0] == "b"]
    report = finished(ensemble(flux_uri, run_dir, "run", "run.yaml"))
    check_the_run(flux_uri, run_dir, report)


def test_killed_at_random_points_again_and_again(flux_uri: str, run_dir: Path) -> None:
    """Up to three runs of the same command are killed after a random while; the last one runs
    to the end. (A run that ended before its kill is over: running the command again would
    start the ensemble anew, as it should.)"""
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    report = None
    for _ in range(3):
        process = ensemble(flux_uri, run_dir, "run", "run.yaml")
        try:
            process.wait(chance.uniform(0.3, 2.0))
            report = finished(process)
            break
        except subprocess.TimeoutExpired:
            kill(process)
        if ended(run_dir):
            break
    else:
        report = finished(ensemble(flux_uri, run_dir, "run", "run.yaml"))
    try:
        check_the_run(flux_uri, run_dir, report)
    except AssertionError as error:
        raise AssertionError(f"random seed {seed}: {error}") from error


def test_detach_leaves_the_jobs_running_and_attach_follows_them_to_the_end(
    flux_uri: str, run_dir: Path
) -> None:
    detached = finished(ensemble(flux_uri, run_dir, "run", "run.yaml", "--detach"))
    assert detached == {"detached": True, "state": "state", "submitted": 7}
    left = jobs_of(flux_uri, run_dir)
    assert len(left) == 7 and "CANCELED" not in {result for _, _, result in left}
    report = finished(ensemble(flux_uri, run_dir, "attach", "state"))
    check_the_run(flux_uri, run_dir, report)
