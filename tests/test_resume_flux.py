"""Resume and detach on a real Flux instance: a new member adopts the jobs of one that is gone.

The member tests hand a second `FluxMember` the jobs of a first one (closed, which leaves its jobs
running as a killed controller does). The command-line tests SIGKILL `ensemble run --member flux
--state DIR` at chosen and at random points, run the same command again, and count on the
instance itself: every job of the run submitted once, every outcome right, and the rule that
reacts to the third success of `a` fired once in all. Skipped where Flux is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_flux_integration import Session, eventlog, flux_instance

from ensemble_core.events import Outcome
from ensemble_core.members.base import TOKEN_ATTRIBUTE
from ensemble_core.spec import JobSpec

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def flux_uri():
    with flux_instance("--test-size=1") as instance:
        yield instance.uri


def tokened(token: str, *command: str, **fields) -> JobSpec:
    return JobSpec(command=list(command), attributes={TOKEN_ATTRIBUTE: token}, **fields)


def without_annotations(session: Session, jobid: int) -> list[tuple[str, float]]:
    return [key for key in session.delivered(jobid) if key[0] != "annotations"]


def test_a_new_member_adopts_by_id_and_by_token_and_replays_each_eventlog(
    flux_uri: str, tmp_path: Path
) -> None:
    """Jobs that ended, run, and are still to end while no member followed them; one found by its
    token alone; a token never submitted and an id whose jobspec holds another token are not
    the queue's. Each found job's events come after `adopt` returns, as its eventlog has them."""

    async def first() -> dict[str, int]:
        session = Session(flux_uri)
        await session.member.start(session.emit)
        try:
            specs = {
                "t-true": tokened("t-true", "true"),
                "t-exit3": tokened("t-exit3", "sh", "-c", "exit 3"),
                "t-sleep": tokened("t-sleep", "sleep", "2", stdout=str(tmp_path / "s.out")),
                "t-long": tokened("t-long", "sleep", "60"),
                "t-lost": tokened("t-lost", "sleep", "1"),
            }
            ids = dict(zip(specs, await asyncio.gather(*map(session.member.submit, specs.values()))))
            await session.until_clean([ids["t-true"], ids["t-exit3"]])
        finally:
            await session.member.close()  # leaves every job as it is
        return ids

    async def second(ids: dict[str, int]) -> tuple[Session, dict, bool]:
        session = Session(flux_uri)
        await session.member.start(session.emit)
        try:
            jobs = [(ids[t], t) for t in ("t-true", "t-exit3", "t-sleep", "t-long")]
            jobs += [(None, "t-lost"), (None, "t-never"), (ids["t-true"], "t-other")]
            found = await session.member.adopt(jobs)
            quiet = not session.events  # nothing before the controller knows the ids
            async with asyncio.timeout(30):
                while not any(e.name == "start" for e in session.events[ids["t-long"]]):
                    await asyncio.sleep(0.02)
            await session.member.cancel(ids["t-long"])
            await session.until_clean(list(ids.values()))
        finally:
            await session.member.close()
        return session, found, quiet

    ids = asyncio.run(first())
    session, found, quiet = asyncio.run(second(ids))
    assert found == ids and quiet
    outcomes = {token: session.record(jobid).outcome for token, jobid in ids.items()}
    assert outcomes == {
        "t-true": Outcome.SUCCESS,
        "t-exit3": Outcome.FAILED,
        "t-sleep": Outcome.SUCCESS,
        "t-long": Outcome.CANCELLED,
        "t-lost": Outcome.SUCCESS,
    }
    assert session.record(ids["t-exit3"]).exit_code == 3
    assert session.logs[ids["t-sleep"]] == [str(tmp_path / "s.out")]
    for jobid in ids.values():
        assert without_annotations(session, jobid) == eventlog(flux_uri, jobid)
    assert session.member.held == dict.fromkeys(session.member.held, 0)
