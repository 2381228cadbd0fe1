"""Every job gets an outcome, whatever fails: each case of issue 9, on the controller.

The member is `ReplayMember`: recorded Flux jobs replayed in this process, so the outcome of
each job is chosen by the test and nothing depends on the machine's speed. Each test fails on
the controller as it was before containment (a hang, a lost job or a cancelled workflow).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import custom_actions
import pytest
from conftest import FIXTURES

from ensemble_core import ensemble as ensemble_module
from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.events import Outcome
from ensemble_core.jobs import JobHandle
from ensemble_core.rules.loader import parse
from ensemble_core.rules.schema import EnsembleFile, JobGroup, Rule
from ensemble_core.spec import JobSpec
from ensemble_core.state import StateJournal
from ensemble_core.testing.replay import ReplayMember
from ensemble_core.testing.waiting import eventually

JOURNALS = [FIXTURES / "flux" / "journal-basic.jsonl", FIXTURES / "flux" / "journal-300.jsonl"]


def replay(**settings) -> ReplayMember:
    return ReplayMember(JOURNALS, **settings)


class Resolutions:
    """Counts how often each handle resolves: exactly once is the only right answer."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self._lock = threading.Lock()

    def track(self, handle: JobHandle) -> JobHandle:
        handle.add_done_callback(self._resolved)
        return handle

    def _resolved(self, handle: JobHandle) -> None:
        with self._lock:
            self.counts[handle.key] += 1

    def each_once(self, handles: list[JobHandle]) -> bool:
        return all(self.counts[h.key] == 1 for h in handles) and all(h.done() for h in handles)


def spec(kind: str = "success", group: str = "g") -> JobSpec:
    return JobSpec(command=["true"], group=group, attributes={"replay": kind})


def run(ensemble: Ensemble):
    ensemble.start()
    return ensemble


def detail_of(ensemble: Ensemble, action: str) -> list[str]:
    return [entry["detail"] for entry in ensemble.actions if entry["action"] == action]


# Rules and actions that fail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("custom_actions:raises", "failed: ValueError: the custom action broke"),
        ("custom_actions:returns_nonsense", "returned {'name': 'explode'}, not an action"),
    ],
)
def test_a_custom_action_that_fails_is_its_result_and_the_ensemble_goes_on(function, expected):
    action = f"{{name: custom, function: '{function}'}}"
    text = f"rules:\n  - trigger: job-finish\n    action: {action}\n"
    ensemble = run(Ensemble(replay(), parse(text, "t.yaml"), allow_custom=True))
    try:
        handles = [ensemble.submit(spec()) for _ in range(3)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 3
        assert expected in detail_of(ensemble, "custom")[-1]
    finally:
        ensemble.close()


def test_a_metric_that_cannot_be_read_switches_its_rule_off_once():
    # `median` is no statistic: validation refuses it now; a rule built around validation still
    # must not stop the ensemble.
    rule = Rule.model_construct(
        trigger="metric",
        name="median.g-duration",
        group=None,
        when=None,
        every=None,
        action=Rule.model_validate({"trigger": "start", "action": {"name": "grow"}}).action,
    )
    config = EnsembleFile.model_construct(**{**EnsembleFile().__dict__, "rules": [rule]})
    ensemble = run(Ensemble(replay(), config))
    try:
        handles = [ensemble.submit(spec()) for _ in range(5)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 5
        (entry,) = ensemble.actions
        assert entry["detail"].startswith("rule switched off: cannot evaluate median.g-duration")
    finally:
        ensemble.close()


def test_a_job_group_that_cannot_become_a_job_fails_its_submit_action():
    groups = [JobGroup.model_construct(name="a", command="")]  # splits to no argv at all
    ok = JobGroup.model_validate({"name": "b", "command": "true"})
    rules = [
        Rule.model_validate({"trigger": "start", "action": {"name": "submit", "label": label}})
        for label in ("a", "b")
    ]
    config = EnsembleFile.model_construct(
        **{**EnsembleFile().__dict__, "jobs": [*groups, ok], "rules": rules}
    )
    ensemble = run(Ensemble(replay(), config))
    try:
        assert ensemble.wait(10)
        failed, submitted = detail_of(ensemble, "submit")
        assert failed.startswith("failed: ") and "command" in failed
        assert submitted == "1 x b"
        assert ensemble.snapshot()["groups"]["b"]["success"] == 1
        assert ensemble.exit == "completed"
    finally:
        ensemble.close()


class RefusingMember(ReplayMember):
    """Raises errors no layer expects from the calls a test names."""

    def __init__(self, refuse: set[str], **settings) -> None:
        super().__init__(JOURNALS, **settings)
        self.refuse = refuse

    async def submit(self, spec):
        if "submit" in self.refuse and spec.attributes.get("refuse"):
            raise RuntimeError("HTTP 500 from the queue")
        return await super().submit(spec)

    async def cancel(self, jobid):
        if "cancel" in self.refuse:
            raise RuntimeError("HTTP 500 on delete")
        await super().cancel(jobid)

    async def grow(self, value):
        if "grow" in self.refuse:
            raise KeyError("the MiniCluster refused the patch")
        return "grew"


def test_a_member_error_on_one_submission_ends_that_job_only():
    ensemble = run(Ensemble(RefusingMember({"submit"})))
    seen = Resolutions()
    try:
        bad = seen.track(ensemble.submit(spec().model_copy(update={"attributes": {"refuse": 1}})))
        good = [seen.track(ensemble.submit(spec())) for _ in range(3)]
        assert bad.wait(10) is Outcome.FAILED
        assert bad.reason == "submission to the replay member failed: HTTP 500 from the queue"
        assert [h.wait(10) for h in good] == [Outcome.SUCCESS] * 3
        counts = ensemble.snapshot()["groups"]["g"]
        assert (counts["submitted"], counts["failed"], counts["success"]) == (4, 1, 3)
        assert counts["pending"] == counts["running"] == 0
    finally:
        ensemble.close()
    assert seen.each_once([bad, *good])


def test_a_failing_grow_is_recorded_and_the_ensemble_goes_on():
    text = "rules:\n  - trigger: job-success\n    action: {name: grow, repetitions: 2}\n"
    ensemble = run(Ensemble(RefusingMember({"grow"}), parse(text, "t.yaml")))
    try:
        handles = [ensemble.submit(spec()) for _ in range(3)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 3
        eventually(lambda: len(detail_of(ensemble, "grow")) >= 2, 5)
        assert (
            detail_of(ensemble, "grow")
            == ["failed: KeyError: 'the MiniCluster refused the patch'"] * 2
        )
    finally:
        ensemble.close()


def test_a_cancel_the_member_refuses_still_ends_the_job_when_closing(monkeypatch):
    monkeypatch.setattr(ensemble_module, "CLOSE_WAIT_SECONDS", 0.3)
    ensemble = run(Ensemble(RefusingMember({"cancel"})))
    seen = Resolutions()
    handle = seen.track(ensemble.submit(spec("hold")))
    time.sleep(0.1)
    started = time.monotonic()
    ensemble.close()
    assert time.monotonic() - started < 3
    assert handle.outcome is Outcome.CANCELLED
    assert "did not confirm the end" in handle.reason
    assert "its cancel failed: HTTP 500 on delete" in handle.reason
    assert seen.each_once([handle])


class HangingMember(ReplayMember):
    """A submission that never comes back (a queue that stopped answering)."""

    async def submit(self, spec):
        await asyncio.Event().wait()


def test_a_submission_in_flight_resolves_when_closing(monkeypatch):
    monkeypatch.setattr(ensemble_module, "CLOSE_WAIT_SECONDS", 0.3)
    ensemble = run(Ensemble(HangingMember(JOURNALS)))
    seen = Resolutions()
    handle = seen.track(ensemble.submit(spec()))
    time.sleep(0.1)
    started = time.monotonic()
    ensemble.close()
    assert time.monotonic() - started < 3
    assert handle.outcome is Outcome.CANCELLED
    assert "the run ended before the replay member took the job" in handle.reason
    assert seen.each_once([handle])


def test_a_job_whose_intent_a_stalled_journal_never_wrote_resolves_when_closing(
    monkeypatch, tmp_path: Path
):
    """A state directory on a stalled disk: the writer never confirms the intent to submit, so
    the job is never submitted, and at close it ends saying why."""
    monkeypatch.setattr(ensemble_module, "CLOSE_WAIT_SECONDS", 0.3)
    journal = StateJournal(tmp_path / "state")
    journal.handoff.start()
    journal.set_meta(ended="done")  # (a run that ended: the ensemble starts anew)
    journal.flush()  # written by the writer, once it is up
    writer = journal.handoff.writer
    assert writer is not None
    ensemble = run(Ensemble(replay(), state=journal))
    os.kill(writer.pid, signal.SIGSTOP)
    seen = Resolutions()
    try:
        handle = seen.track(ensemble.submit(spec()))
        time.sleep(0.3)
        assert not handle.done()  # its submission waits for its intent to be written
        # The close's last flush waits for the writer: it goes on once the job has ended.
        handle.add_done_callback(lambda _: os.kill(writer.pid, signal.SIGCONT))
        ensemble.close()
    finally:
        if writer.poll() is None:  # the test failed before the close resumed it
            os.kill(writer.pid, signal.SIGCONT)
    assert handle.outcome is Outcome.CANCELLED
    assert "the run ended before the replay member took the job" in handle.reason
    assert "the state journal's writer had not written its intent" in handle.reason
    assert seen.each_once([handle])
    written = sqlite3.connect(tmp_path / "state" / "state.db")
    assert written.execute("SELECT outcome FROM jobs").fetchall() == [("cancelled",)]
    written.close()


# Limits that stop loops, not workflows ---------------------------------------------------------


def test_retries_of_front_door_jobs_never_meet_the_action_limit():
    def fail_first(job_spec: JobSpec) -> str:
        return "fail-exit1" if job_spec.attempt == 1 else "success"

    text = (
        "limits: {max_actions: 5}\n"
        "rules:\n  - trigger: job-fail\n    action: {name: resubmit, repetitions: 1}\n"
    )
    ensemble = run(Ensemble(replay(kind_of=fail_first), parse(text, "t.yaml")))
    try:
        handles = [ensemble.submit(spec()) for _ in range(30)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 30
        assert ensemble.exit == "completed" and not ensemble.stop_reason
        assert ensemble.snapshot()["groups"]["g"]["resubmitted"] == 30
    finally:
        ensemble.close()


def test_one_submit_of_twenty_thousand_jobs_is_not_a_loop():
    text = (
        "jobs:\n  - {name: many, command: 'true', count: 20000}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: many}\n"
    )
    ensemble = run(Ensemble(replay(), parse(text, "t.yaml")))
    try:
        assert ensemble.wait(120)
        assert ensemble.exit == "completed", ensemble.stop_reason
        counts = ensemble.snapshot()["groups"]["many"]
        assert counts["submitted"] == counts["success"] == 20000
    finally:
        ensemble.close()


def test_only_the_rule_that_resubmits_spends_a_repetition():
    attempts_kinds = {1: "timeout", 2: "fail-exit1"}

    def kind(job_spec: JobSpec) -> str:
        return attempts_kinds.get(job_spec.attempt, "success")

    text = (
        "rules:\n"
        "  - trigger: job-timeout\n    action: {name: resubmit, repetitions: 1}\n"
        "  - trigger: job-fail\n    action: {name: resubmit, repetitions: 1}\n"
    )
    ensemble = run(Ensemble(replay(kind_of=kind), parse(text, "t.yaml")))
    try:
        handle = ensemble.submit(spec())
        assert handle.wait(10) is Outcome.SUCCESS
        outcomes = [a.record.outcome for a in handle.attempts]
        assert outcomes == [Outcome.TIMEOUT, Outcome.FAILED, Outcome.SUCCESS]
        assert [entry["rule"] for entry in ensemble.actions] == [0, 1]
    finally:
        ensemble.close()


# Metric rules see every change -----------------------------------------------------------------


def test_a_queue_rule_fires_as_soon_as_its_gauge_holds():
    text = (
        "rules:\n  - trigger: metric\n    name: queue.pending\n    when: '>= 2'\n"
        "    action: {name: grow}\n"
    )
    ensemble = run(Ensemble(replay(), parse(text, "t.yaml")))
    try:
        # Jobs that wait in the queue: held ones start a few ms after their submission, and
        # under load one could start before the next was submitted (CI saw none fire so).
        for _ in range(3):
            ensemble.submit(spec("queued"))
        # Without a heartbeat and before any job ends (queued jobs never end by themselves): a
        # rule seen only on those would never fire here.
        assert eventually(lambda: ensemble.actions, 5)
    finally:
        ensemble.close()


# Actions finish before the end -----------------------------------------------------------------


class SlowShrinkMember(ReplayMember):
    async def shrink(self, value):
        await asyncio.sleep(0.5)
        return f"shrank by {value} node(s)"


def test_the_ensemble_ends_after_the_action_the_last_job_fired():
    text = (
        "jobs:\n  - {name: a, command: 'true'}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
        "  - trigger: metric\n    name: count.a.success\n    when: 1\n"
        "    action: {name: shrink}\n"
    )
    ensemble = run(Ensemble(SlowShrinkMember(JOURNALS), parse(text, "t.yaml")))
    try:
        assert ensemble.wait(10)
        assert detail_of(ensemble, "shrink") == ["shrank by 1 node(s)"]
    finally:
        ensemble.close()


# The controller's own thread -------------------------------------------------------------------


def test_blocking_calls_from_the_controllers_thread_fail_at_once():
    text = (
        "rules:\n  - trigger: job-start\n    action: {name: custom, function: "
        "'custom_actions:waits_for_its_job'}\n"
        "  - trigger: job-success\n    action: {name: custom, function: "
        "'custom_actions:snapshot_then_close'}\n"
    )
    ensemble = run(Ensemble(replay(), parse(text, "t.yaml"), allow_custom=True))
    try:
        started = time.monotonic()
        assert ensemble.submit(spec()).wait(10) is Outcome.SUCCESS
        eventually(lambda: len(detail_of(ensemble, "custom")) >= 2, 5)
        waited, closed = (d for d in detail_of(ensemble, "custom") if d.startswith("failed"))
        assert "JobHandle.wait() was called on the ensemble's own thread" in waited
        assert "Ensemble.close() was called on the ensemble's own thread" in closed
        assert custom_actions.CALLS[-1] == {"groups": ["g"]}  # snapshot() answered at once
        assert time.monotonic() - started < 4
    finally:
        ensemble.close()
    with pytest.raises(EnsembleError, match="closed"):
        ensemble.submit(spec())


# A member lost for good ------------------------------------------------------------------------


def test_a_lost_member_ends_the_ensemble_and_every_job():
    member = replay()
    ensemble = run(Ensemble(member))
    seen = Resolutions()
    try:
        handles = [seen.track(ensemble.submit(spec("hold"))) for _ in range(4)]
        time.sleep(0.1)
        member.on_lost("the journal could not be resumed for 60 s")  # from another thread
        assert ensemble.wait(5)
        assert ensemble.exit == "error"
        assert "replay member was lost" in ensemble.stop_reason
        assert {h.wait(5) for h in handles} == {Outcome.FAILED}
        assert "was lost (the journal could not be resumed for 60 s)" in handles[0].reason
    finally:
        ensemble.close()
    assert seen.each_once(handles)


# Racing threads --------------------------------------------------------------------------------


def test_submits_racing_close_each_resolve_once_or_are_refused():
    ensemble = run(Ensemble(replay(speed=1.0)))
    seen = Resolutions()
    handles: list[JobHandle] = []
    refused = Counter()
    stop = threading.Event()

    def submitter() -> None:
        while not stop.is_set():
            try:
                handles.append(seen.track(ensemble.submit(spec())))
            except EnsembleError:
                refused["after close"] += 1
                return

    threads = [threading.Thread(target=submitter) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    ensemble.close()
    stop.set()
    for thread in threads:
        thread.join(5)
    assert handles and refused["after close"] == 3
    assert seen.each_once(handles)
    assert {h.outcome for h in handles} <= {Outcome.SUCCESS, Outcome.CANCELLED}


def test_a_cancel_racing_its_submission_resolves_the_job_once():
    ensemble = run(Ensemble(replay(speed=1.0)))
    seen = Resolutions()
    try:
        handles = [seen.track(ensemble.submit(spec("hold"))) for _ in range(50)]
        for handle in handles:
            ensemble.cancel(handle)
        assert {h.wait(10) for h in handles} == {Outcome.CANCELLED}
    finally:
        ensemble.close()
    assert seen.each_once(handles)


def test_repeated_events_count_once(tmp_path: Path):
    """A member that resumes its stream may send events twice; every count stays right."""

    class Stutter(ReplayMember):
        def _play(self, jobid, steps, origin, index=0):
            doubled = [step for step in steps for _ in (0, 1)]
            super()._play(jobid, doubled, origin, index)

    text = "rules:\n  - trigger: job-finish\n    action: {name: grow, repetitions: 100}\n"
    ensemble = run(Ensemble(Stutter(JOURNALS), parse(text, "t.yaml")))
    try:
        handles = [ensemble.submit(spec()) for _ in range(10)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 10
        counts = ensemble.snapshot()["groups"]["g"]
        assert (counts["finished"], counts["success"], counts["running"]) == (10, 10, 0)
        time.sleep(0.1)
        assert len(detail_of(ensemble, "grow")) == 10
    finally:
        ensemble.close()


# Flat memory -----------------------------------------------------------------------------------


def test_nothing_per_job_survives_its_end():
    """Once a front door lets go of a resolved handle, the controller holds nothing of the job:
    the handle is collected, and the job table, resubmission counts and buffers are empty."""
    import gc
    import weakref

    def fail_first(job_spec: JobSpec) -> str:
        return "fail-exit1" if job_spec.attempt == 1 else "success"

    text = "rules:\n  - trigger: job-fail\n    action: {name: resubmit, repetitions: 1}\n"
    ensemble = run(Ensemble(replay(kind_of=fail_first), parse(text, "t.yaml")))
    try:
        handles = [ensemble.submit(spec()) for _ in range(2000)]
        assert {h.wait(10) for h in handles} == {Outcome.SUCCESS}
        alive = [weakref.ref(h) for h in handles]
        del handles
        gc.collect()
        assert sum(ref() is not None for ref in alive) == 0
        assert not ensemble._active and not ensemble._by_member_id and not ensemble._waiting
        assert len(ensemble._orphans) == 0 and not ensemble._cancel_errors
        assert all(not state.per_job for state in ensemble.engine._resubmit_states)
        counts = ensemble.snapshot()["groups"]["g"]
        assert (counts["submitted"], counts["success"], counts["resubmitted"]) == (4000, 2000, 2000)
    finally:
        ensemble.close()


@pytest.mark.parametrize("failing", ["_started", "_attempt_ended", "_count_end"])
def test_a_bug_met_while_handling_an_event_still_ends_the_job_once(monkeypatch, failing):
    """A bug in the controller's handling of one job's start, or of its end (at its beginning,
    or half-way, after the job stopped being followed): that job still ends, once (its start:
    when it ends; its end: at once, failed), and the others as usual."""
    ensemble = run(Ensemble(replay()))
    seen = Resolutions()
    original = getattr(Ensemble, failing)
    broke: list[int] = []

    def once_broken(self, *args, **kwargs):
        if not broke:
            broke.append(1)
            raise RuntimeError("a bug")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ensemble, failing, once_broken)
    try:
        handles = [seen.track(ensemble.submit(spec())) for _ in range(3)]
        outcomes = sorted(h.wait(10).value for h in handles)
        expected = ["success"] * 3 if failing == "_started" else ["failed", "success", "success"]
        assert outcomes == expected
        if failing != "_started":
            assert [h.reason for h in handles if h.outcome is Outcome.FAILED] == ["failed: a bug"]
    finally:
        ensemble.close()
    assert seen.each_once(handles)
