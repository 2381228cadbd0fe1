"""A controller that dies is resumed from its state journal: no job twice, rules fire once.

The member is a `ReplayMember` that outlives the controller (as a Flux instance or a Kubernetes
cluster does): its jobs wait at `start` until the test ends them, and it remembers every event
so a new controller can adopt the jobs. The first controller "dies" the way a killed process
does: its loop stops where it is, nothing is closed, and only what its journal committed
survives.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import FIXTURES, journal_dies

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from ensemble_core.state import StateJournal
from ensemble_core.testing.replay import ReplayMember
from ensemble_core.testing.waiting import eventually

JOURNALS = [FIXTURES / "flux" / "journal-basic.jsonl", FIXTURES / "flux" / "journal-300.jsonl"]

RULES = """
jobs:
  - {name: a, command: 'true', count: 5}
  - {name: b, command: 'true'}
rules:
  - trigger: start
    action: {name: submit, label: a}
  - trigger: metric
    name: count.a.success
    when: 3
    action: {name: submit, label: b}
"""


def held_member() -> ReplayMember:
    """Every job waits at `start` until `finish_held` ends it."""
    return ReplayMember(JOURNALS, kind_of=lambda spec: "hold", remember=True)


def die(ensemble: Ensemble) -> None:
    """Stop the controller as SIGKILL would: no close, no flush; the journal's file lock goes."""
    ensemble._loop.call_soon_threadsafe(ensemble._loop.stop)
    ensemble._thread.join(5)
    assert ensemble.journal is not None
    journal_dies(ensemble.journal)


def on_loop(ensemble: Ensemble, function, *args):
    return ensemble._call(_call(function, *args)).result(5)


async def _call(function, *args):
    return function(*args)


def counts(ensemble: Ensemble, group: str) -> dict:
    return ensemble.snapshot()["groups"].get(group, {})


def test_a_resumed_run_adopts_its_jobs_and_fires_each_rule_once(tmp_path: Path):
    member = held_member()
    first = Ensemble(member, parse(RULES, "r.yaml"), state=StateJournal(tmp_path / "state"))
    first.start()
    assert eventually(lambda: counts(first, "a").get("running") == 5, 10, every=0.01), "timed out"
    on_loop(first, member.finish_held, 2)
    assert eventually(lambda: counts(first, "a").get("success") == 2, 10, every=0.01), "timed out"
    time.sleep(0.3)  # a periodic flush writes the two ends
    die(first)

    second = Ensemble(member, parse(RULES, "r.yaml"), state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        assert (counts(second, "a")["submitted"], counts(second, "a")["running"]) == (5, 3)
        on_loop(second, member.finish_held, 3)
        assert eventually(lambda: counts(second, "b").get("running") == 1, 10, every=0.01), (
            "timed out"
        )
        on_loop(second, member.finish_held, 1)
        assert second.wait(10)
        a, b = counts(second, "a"), counts(second, "b")
        assert (a["submitted"], a["success"], a["running"]) == (5, 5, 0)
        assert (b["submitted"], b["success"]) == (1, 1)  # the metric rule fired once in all
        assert len(member._history) == 6  # six member jobs: none submitted twice
        assert second.exit == "completed"
    finally:
        second.close()


def test_jobs_queued_but_not_submitted_are_submitted_after_the_restart(tmp_path: Path):
    member = held_member()
    text = RULES.replace("count: 5", "count: 300")
    first = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    first.start()
    assert eventually(lambda: counts(first, "a").get("submitted", 0) >= 64, 10, every=0.01), (
        "timed out"
    )
    die(first)
    submitted_before = len(member._history)

    second = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        assert eventually(lambda: counts(second, "a").get("running") == 300, 10, every=0.01), (
            "timed out"
        )
        assert len(member._history) == 300  # the first controller's jobs were adopted
        assert submitted_before <= 300
        on_loop(second, member.finish_held, 300)
        assert eventually(lambda: counts(second, "b").get("running") == 1, 10, every=0.01), (
            "timed out"
        )
        on_loop(second, member.finish_held, 1)
        assert second.wait(10)
        assert counts(second, "a")["success"] == 300 and counts(second, "b")["success"] == 1
    finally:
        second.close()


def test_a_run_that_ended_starts_fresh_and_a_second_controller_is_refused(tmp_path: Path):
    member = ReplayMember(JOURNALS)
    text = (
        "jobs:\n  - {name: a, command: 'true', count: 3}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
    )
    for _ in range(2):
        ensemble = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "s"))
        ensemble.start()
        try:
            assert ensemble.wait(10)
            with pytest.raises(ConfigError, match=r"another controller .* is using this state"):
                StateJournal(tmp_path / "s")
        finally:
            ensemble.close()
        assert counts(ensemble, "a")["success"] == 3  # the second run ran its own 3 jobs


def test_a_front_door_job_asked_for_again_follows_the_adopted_one(tmp_path: Path):
    member = held_member()
    first = Ensemble(member, state=StateJournal(tmp_path / "state"))
    first.start()
    spec = JobSpec(command=["true"], group="align")
    first.submit(spec, identity="align/sample=1")
    assert eventually(lambda: counts(first, "align").get("running") == 1, 10, every=0.01), (
        "timed out"
    )
    time.sleep(0.3)
    first.close(detach=True)  # Snakemake's --ensemble-detach: the job goes on

    second = Ensemble(member, state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        again = second.submit(spec, identity="align/sample=1")
        other = second.submit(spec, identity="align/sample=2")
        assert eventually(lambda: counts(second, "align").get("running") == 2, 10, every=0.01), (
            "timed out"
        )
        on_loop(second, member.finish_held, 2)
        assert again.wait(10) is Outcome.SUCCESS and other.wait(10) is Outcome.SUCCESS
        assert len(member._history) == 2  # sample 1 ran once, across both controllers
    finally:
        second.close()


def test_jobs_only_handed_to_the_member_survive_two_deaths(tmp_path: Path):
    """Killed after the intent to submit was written but before any job's row: the next run
    adopts those jobs by token; killed again before they did anything (still queued), the run
    after must still know them."""
    member = ReplayMember(JOURNALS, kind_of=lambda spec: "queued", remember=True)
    text = "jobs:\n  - {name: a, command: 'true', count: 3}\n" + (
        "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
    )
    first = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    first.start()
    # On the queue; rows not written yet.
    assert eventually(lambda: len(member._history) == 3, 10, every=0.01), "timed out"
    die(first)
    for _ in range(2):  # each resumed run writes its state, then dies with the jobs queued
        again = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
        again.start()
        on_loop(again, again.flush_state)
        die(again)
    last = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    last.start()
    try:
        on_loop(last, member.finish_held, 3)
        assert last.wait(10)
        assert counts(last, "a")["success"] == 3
        assert len(member._history) == 3  # adopted each time, never submitted again
    finally:
        last.close()


def test_an_exception_replayed_after_the_restart_fires_its_rule_once(tmp_path: Path):
    """A job-exception rule reacts to a job's non-fatal exception; the member replays the
    job's events to the resumed controller, that exception among them: it is not new."""
    member = held_member()
    text = (
        "jobs:\n  - {name: a, command: 'true'}\n  - {name: b, command: 'true'}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
        "  - trigger: job-exception\n    group: a\n"
        "    action: {name: submit, label: b, repetitions: 5}\n"
    )
    first = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    first.start()
    assert eventually(lambda: counts(first, "a").get("running") == 1, 10, every=0.01), "timed out"
    (jobid,) = member._held
    warning = {"type": "test", "severity": 1, "note": "a drained node", "userid": 0}
    on_loop(first, member._record_and_emit, JobEvent(jobid, "exception", time.time(), warning))
    assert eventually(lambda: counts(first, "b").get("running") == 1, 10, every=0.01), "timed out"
    on_loop(first, first.flush_state)
    die(first)

    second = Ensemble(member, parse(text, "r.yaml"), state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        on_loop(second, lambda: None)  # after the replayed events
        assert counts(second, "b")["submitted"] == 1  # the rule fired once in all
        on_loop(second, member.finish_held, 2)
        assert second.wait(10)
        assert len(member._history) == 2
    finally:
        second.close()
