"""The controller on real local processes: logical jobs, resubmission, actions and closing."""

from __future__ import annotations

import asyncio
import itertools
import queue
import time

import custom_actions
import pytest

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.members.base import Member
from ensemble_core.members.local import LocalMember
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec

HOG = "import time; b = bytearray(100 * 2**20); time.sleep(0.5)"


def ensemble_for(text: str, log_dir: str, **member) -> Ensemble:
    return Ensemble(LocalMember(log_dir=log_dir, **member), parse(text, "test.yaml"))


def test_oom_is_resubmitted_with_more_memory_as_the_same_logical_job(log_dir):
    ensemble = ensemble_for(
        "rules:\n  - trigger: job-oom\n    action: {name: resubmit, resources: {mem_mb: x2}}\n",
        log_dir,
    )
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["python3", "-c", HOG], group="hog", memory_mb=70))
        assert handle.wait(30) is Outcome.SUCCESS
        assert [a.spec.memory_mb for a in handle.attempts] == [70, 140]
        assert [a.record.outcome for a in handle.attempts] == [Outcome.OOM, Outcome.SUCCESS]
        counts = ensemble.snapshot()["groups"]["hog"]
        assert (counts["submitted"], counts["oom"], counts["success"]) == (2, 1, 1)
        assert ensemble.actions[0]["detail"] == "attempt 2: memory_mb 140"
    finally:
        ensemble.close()


def test_repetitions_bound_the_resubmissions(log_dir):
    ensemble = ensemble_for(
        "rules:\n  - trigger: job-fail\n    action: {name: resubmit, repetitions: 2}\n", log_dir
    )
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["false"]))
        assert handle.wait(30) is Outcome.FAILED
        assert len(handle.attempts) == 3
        assert handle.reason == "failed with exit code 1"
    finally:
        ensemble.close()


def test_done_callbacks_and_log_paths(log_dir):
    ensemble = ensemble_for("rules: []\n", log_dir)
    ensemble.start()
    seen = queue.Queue()
    try:
        handle = ensemble.submit(JobSpec(command=["sh", "-c", "echo out; echo err >&2; exit 2"]))
        handle.add_done_callback(lambda h: seen.put(h.outcome))
        # Callbacks run on the controller's thread once the outcome is set, as a Future's do.
        assert seen.get(timeout=30) is Outcome.FAILED
        assert seen.empty()
        assert handle.exit_code == 2
        assert [p.rsplit(".", 1)[1] for p in handle.log_paths] == ["err", "out"]
    finally:
        ensemble.close()


def test_close_cancels_running_and_pending_jobs(log_dir):
    ensemble = ensemble_for("rules: []\n", log_dir, cores=1)
    ensemble.start()
    handles = [ensemble.submit(JobSpec(command=["sleep", "60"])) for _ in range(3)]
    time.sleep(0.3)
    started = time.monotonic()
    ensemble.close()
    assert time.monotonic() - started < 10
    assert [h.outcome for h in handles] == [Outcome.CANCELLED] * 3
    assert ensemble._loop.is_closed()  # not left to the garbage collector at exit


def test_cancel_one_job(log_dir):
    ensemble = ensemble_for("rules: []\n", log_dir)
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["sleep", "60"]))
        time.sleep(0.3)
        ensemble.cancel(handle)
        assert handle.wait(10) is Outcome.CANCELLED
    finally:
        ensemble.close()


def test_cancel_action_by_group(log_dir):
    text = (
        "jobs:\n  - {name: slow, command: sleep 60, count: 2}\n  - {name: bad, command: 'false'}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: slow}\n"
        "  - trigger: start\n    action: {name: submit, label: bad}\n"
        "  - trigger: job-fail\n    group: bad\n    action: {name: cancel, label: slow}\n"
    )
    ensemble = ensemble_for(text, log_dir, cores=4)
    ensemble.start()
    try:
        assert ensemble.wait(20)
        groups = ensemble.snapshot()["groups"]
        assert groups["slow"]["cancelled"] == 2 and groups["bad"]["failed"] == 1
    finally:
        ensemble.close()


def test_custom_action_needs_to_be_allowed(log_dir):
    text = (
        "rules:\n  - trigger: job-fail\n"
        "    action: {name: custom, function: 'custom_actions:grow_by_failures'}\n"
    )
    for allowed in (False, True):
        ensemble = Ensemble(
            LocalMember(log_dir=log_dir, max_nodes=3), parse(text, "t.yaml"), allow_custom=allowed
        )
        ensemble.start()
        try:
            ensemble.submit(JobSpec(command=["false"], group="g")).wait(10)
            time.sleep(0.2)
            details = [action["detail"] for action in ensemble.actions]
        finally:
            ensemble.close()
        if allowed:
            assert details == ["called custom_actions:grow_by_failures", "grew by 1 node(s) to 2"]
            assert custom_actions.CALLS[-1]["group"] == "g"
        else:
            assert details == ["skipped: custom actions need --allow-custom"]


class EarlyMember(Member):
    """Sends a job's events before `submit` returns its id, as a busy queue may."""

    name = "early"

    def __init__(self) -> None:
        self.ids = itertools.count(100)

    async def start(self, emit):
        self.emit = emit

    async def submit(self, spec):
        jobid = next(self.ids)
        for name in ("submit", "start", "finish", "clean"):
            context = {"status": 0} if name == "finish" else {}
            self.emit(JobEvent(jobid, name, time.time(), context))
        self.emit(JobEvent(999, "submit", time.time(), {}))  # someone else's job
        await asyncio.sleep(0.01)
        return jobid

    async def cancel(self, jobid):
        return None

    async def close(self):
        return None


def test_events_before_the_id_are_held_until_the_job_is_known():
    ensemble = Ensemble(EarlyMember())
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["x"]))
        assert handle.wait(5) is Outcome.SUCCESS
        assert len(ensemble._orphans) == 0
    finally:
        ensemble.close()


class BrokenMember(EarlyMember):
    async def submit(self, spec):
        raise ValueError("the queue refused the job")


def test_a_refused_submission_fails_the_job_with_the_reason():
    ensemble = Ensemble(BrokenMember())
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["x"]))
        assert handle.wait(5) is Outcome.FAILED
        assert handle.reason == (
            "submission to the early member failed: ValueError: the queue refused the job"
        )
    finally:
        ensemble.close()


def test_job_limit_stops_rules_that_feed_themselves(log_dir):
    text = (
        "limits: {max_jobs: 3}\n"
        "jobs:\n  - {name: a, command: 'true', count: 2}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: a}\n"
        "  - trigger: job-success\n    action: {name: submit, label: a, repetitions: 100}\n"
    )
    ensemble = ensemble_for(text, log_dir)
    ensemble.start()
    try:
        assert ensemble.wait(20)
        assert ensemble.exit == "limit"
        assert "limits.max_jobs" in ensemble.stop_reason
        # The start rule's 2 jobs are what the file asks for; the reactive rule's 3 hit the limit.
        assert ensemble.snapshot()["groups"]["a"]["submitted"] == 2 + 3
    finally:
        ensemble.close()


class SlowSubmitMember(EarlyMember):
    """Takes a while to hand back a job's id, as a remote queue does."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[int] = []

    async def submit(self, spec):
        await asyncio.sleep(0.3)
        jobid = next(self.ids)
        self.emit(JobEvent(jobid, "submit", time.time(), {}))
        return jobid

    async def cancel(self, jobid):
        self.cancelled.append(jobid)
        note = {"type": "cancel", "severity": 0, "note": "cancelled"}
        self.emit(JobEvent(jobid, "exception", time.time(), note))
        self.emit(JobEvent(jobid, "clean", time.time(), {}))


def test_cancel_during_submission_reaches_the_member_once_it_has_the_job():
    member = SlowSubmitMember()
    ensemble = Ensemble(member)
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["x"]))
        time.sleep(0.1)  # the submission is in flight: the member has not answered yet
        ensemble.cancel(handle)
        assert handle.wait(5) is Outcome.CANCELLED
        assert member.cancelled == [100]
    finally:
        ensemble.close()


def test_front_door_jobs_do_not_count_against_the_rules_job_limit(log_dir):
    ensemble = ensemble_for("limits: {max_jobs: 1}\nrules: []\n", log_dir, cores=4)
    ensemble.start()
    try:
        handles = [ensemble.submit(JobSpec(command=["true"])) for _ in range(3)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 3
        assert ensemble.exit == "completed"
    finally:
        ensemble.close()
    with pytest.raises(EnsembleError, match="closed"):
        ensemble.submit(JobSpec(command=["true"]))


def test_a_callback_added_after_the_end_runs_at_once(log_dir):
    ensemble = ensemble_for("rules: []\n", log_dir)
    ensemble.start()
    try:
        handle = ensemble.submit(JobSpec(command=["true"]))
        handle.wait(10)
        seen = []
        handle.add_done_callback(lambda h: seen.append(h.outcome))
        assert seen == [Outcome.SUCCESS]
    finally:
        ensemble.close()


def test_queue_rules_see_the_oldest_wait_without_a_heartbeat(log_dir):
    text = (
        "jobs:\n  - {name: w, command: sleep 3, count: 3}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: w}\n"
        "  - trigger: metric\n    name: queue.oldest-pending\n    when: '> 0.5s'\n"
        "    action: {name: grow}\n"
    )
    ensemble = ensemble_for(text, log_dir, cores=1, max_nodes=2)
    ensemble.start()
    try:
        assert ensemble.wait(30)
        grows = [a for a in ensemble.actions if a["action"] == "grow"]
        assert [a["detail"] for a in grows] == ["grew by 1 node(s) to 2"]
        # The gauge grows with time: the rule fires once it passes 0.5 s, well before the first
        # job ends (at 3 s, its first event since the start: a rule seen on events alone fires
        # then), with no heartbeat.
        assert 0.5 <= grows[0]["time"] < 2.5
        assert ensemble.metrics.value("queue.pending") == 0.0
        assert ensemble.metrics.value("queue.oldest-pending") == 0.0
    finally:
        ensemble.close()


def test_an_operator_asks_for_an_action_and_gets_its_result(log_dir):
    ensemble = ensemble_for("rules: []\n", log_dir, max_nodes=3)
    ensemble.start()
    try:
        (entry,) = ensemble.request_action({"name": "grow", "value": 2})
        assert (entry["rule"], entry["trigger"], entry["detail"]) == (
            -1,
            "operator",
            "grew by 2 node(s) to 3",
        )
        with pytest.raises(EnsembleError, match="name: Input should be 'submit'"):
            ensemble.request_action({"name": "explode"})
    finally:
        ensemble.close()
