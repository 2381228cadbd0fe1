"""The controller with several members behind a router: recorded Flux jobs replayed by two
ReplayMembers. Where each job goes (pinned, routed, matched, by policy), jobs no member can run,
a member lost for good, resubmission elsewhere, metrics per member, and resuming a run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, journal_dies

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.matching import MEMBER_ATTRIBUTE, REQUIRES_ATTRIBUTE
from ensemble_core.members import router as router_module
from ensemble_core.members.local import LocalMember
from ensemble_core.members.router import RouterMember
from ensemble_core.metrics import Metrics
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from ensemble_core.state import StateJournal
from ensemble_core.testing.faults import Faults, FaultyMember
from ensemble_core.testing.replay import ReplayMember
from ensemble_core.testing.waiting import eventually

JOURNALS = [FIXTURES / "flux" / "journal-basic.jsonl"]
SMALL = {"cores": 4, "gpus": 0}
BIG = {"cores": 64, "gpus": 4}


def replay(kind: str | None = None, **options) -> ReplayMember:
    """Jobs replay the recorded kind their `replay` attribute names (or `kind`)."""
    if kind:
        options["kind_of"] = lambda spec: kind
    return ReplayMember(JOURNALS, **options)


def two(a: ReplayMember | None = None, b: ReplayMember | None = None, **options) -> RouterMember:
    options.setdefault("offers", {"a": SMALL, "b": BIG})
    return RouterMember({"a": a or replay(), "b": b or replay()}, **options)


def started(member: RouterMember, rules: str = "rules: []\n", **options) -> Ensemble:
    ensemble = Ensemble(member, parse(rules, "t.yaml", ["a", "b"]), **options)
    ensemble.start()
    return ensemble


def spec(group: str = "sim", **fields) -> JobSpec:
    return JobSpec(command=["true"], group=group, **fields)


def on_loop(ensemble: Ensemble, function, *args):
    async def call():
        return function(*args)

    return ensemble._call(call()).result(5)


def dies_after_a_flush(ensemble: Ensemble) -> None:
    """The controller dies once a periodic flush has written what it knows."""
    time.sleep(0.3)
    ensemble._loop.call_soon_threadsafe(ensemble._loop.stop)
    ensemble._thread.join(5)
    journal_dies(ensemble.journal)


def where(handle) -> str:
    """The member an attempt ran on: the first part of its id."""
    return str(handle.member_id).partition("/")[0]


def test_jobs_go_where_they_are_pinned_matched_or_the_first_compatible_member():
    ensemble = started(two(offers={"a": SMALL, "b": {**BIG}}, features={"b": ["a100"]}))
    try:
        handles = {
            "plain": ensemble.submit(spec()),
            "pinned": ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "b"})),
            "wide": ensemble.submit(spec(cores_per_task=8)),
            "gpu": ensemble.submit(spec(gpus_per_task=1)),
            "feature": ensemble.submit(spec(attributes={REQUIRES_ATTRIBUTE: ["a100"]})),
        }
        for handle in handles.values():
            assert handle.wait(10) is Outcome.SUCCESS
        assert {name: where(h) for name, h in handles.items()} == {
            "plain": "a",
            "pinned": "b",
            "wide": "b",
            "gpu": "b",
            "feature": "b",
        }
        members = ensemble.snapshot()["members"]
        assert (members["a"]["success"], members["b"]["success"]) == (1, 4)
    finally:
        ensemble.close()


def test_a_declared_default_takes_the_jobs_it_can_run():
    ensemble = started(two(default="b"))
    try:
        jobs = [ensemble.submit(spec()) for _ in range(3)]
        assert all(job.wait(10) is Outcome.SUCCESS for job in jobs)
        assert {where(job) for job in jobs} == {"b"}
    finally:
        ensemble.close()


def test_least_backlog_sends_each_job_where_fewest_wait(tmp_path: Path):
    """Two real local members of one core each, jobs that sleep: a job that waits makes its
    member's backlog."""
    members = {name: LocalMember(cores=1, log_dir=str(tmp_path / name)) for name in "ab"}
    ensemble = started(RouterMember(members, policy="least-backlog"))
    try:
        jobs = []
        for _ in range(5):
            jobs.append(ensemble.submit(JobSpec(command=["sleep", "30"])))
            assert eventually(lambda: jobs[-1].member_id is not None, 10, every=0.01), "timed out"
        # a: one runs (backlog 0, the tie goes to a), the next waits (1); b takes the third
        # (runs) and the fourth (waits); the fifth meets a tie again.
        assert [where(job) for job in jobs] == ["a", "a", "b", "b", "a"]
    finally:
        ensemble.close()
    assert all(job.outcome is Outcome.CANCELLED for job in jobs)


def test_the_recent_pending_time_counts_a_job_that_still_waits():
    """`least-pending` reads this: the mean of the last pending times, or the wait of the
    oldest waiting job when that is longer (a member whose jobs never start loses its turn)."""
    part = RouterMember({"a": replay()})._parts["a"]
    assert part.pending_time(now=100.0) == 0.0
    part.pending_times.extend([1.0, 3.0])
    assert part.pending_time(now=100.0) == 2.0
    now = time.monotonic()
    part.submitted(7, since=now - 5.0)  # waits for 5 s
    assert part.pending_time(now) == 5.0
    part.relay(JobEvent(7, "start", time.time()))  # started: its 5 s join the recent ones
    assert 7 not in part.waiting
    assert part.pending_time(now) == pytest.approx(3.0, abs=0.5)


def test_a_route_action_sends_the_groups_next_jobs_elsewhere_and_back():
    ensemble = started(two())
    try:
        before = ensemble.submit(spec())
        assert before.wait(10) is Outcome.SUCCESS
        recorded = ensemble.request_action({"name": "route", "label": "sim", "member": "b"})
        assert recorded[0]["detail"] == "sim: b"
        routed, other = ensemble.submit(spec()), ensemble.submit(spec(group="post"))
        assert routed.wait(10) is Outcome.SUCCESS and other.wait(10) is Outcome.SUCCESS
        back = ensemble.request_action({"name": "route", "label": "sim"})
        assert back[0]["detail"] == "sim: no route (as declared, or matched) (was b)"
        after = ensemble.submit(spec())
        assert after.wait(10) is Outcome.SUCCESS
        assert [where(h) for h in (before, routed, other, after)] == ["a", "b", "a", "a"]
        refused = ensemble.request_action({"name": "route", "label": "sim", "member": "bb"})
        assert refused[0]["detail"] == ("failed: no member 'bb' (members: a, b); did you mean 'b'?")
    finally:
        ensemble.close()


def test_a_route_gives_way_where_its_member_cannot_run_the_job():
    ensemble = started(two())
    try:
        ensemble.request_action({"name": "route", "label": "sim", "member": "a"})
        wide = ensemble.submit(spec(cores_per_task=16))
        assert wide.wait(10) is Outcome.SUCCESS
        assert where(wide) == "b"
    finally:
        ensemble.close()


def test_a_job_no_member_can_run_ends_unsatisfiable_saying_what_each_lacks():
    ensemble = started(two())
    try:
        huge = ensemble.submit(spec(cores_per_task=128))
        unknown = ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "bb"}))
        small = ensemble.submit(spec(cores_per_task=8, attributes={MEMBER_ATTRIBUTE: "a"}))
        assert huge.wait(10) is Outcome.UNSATISFIABLE
        assert huge.reason == (
            "unsatisfiable request: no member can run it (a lacks 128 cores per node (it has "
            "4); b lacks 128 cores per node (it has 64))"
        )
        assert unknown.wait(10) is Outcome.UNSATISFIABLE
        assert unknown.reason == (
            "unsatisfiable request: it asks for no member 'bb' (members: a, b); did you mean 'b'?"
        )
        assert small.wait(10) is Outcome.UNSATISFIABLE
        assert small.reason == (
            "unsatisfiable request: it asks for the a member, which lacks 8 cores per node "
            "(it has 4)"
        )
        snapshot = ensemble.snapshot()
        assert snapshot["groups"]["sim"]["unsatisfiable"] == 3
        assert snapshot["members"] == {}  # they never reached a member
        assert ensemble.metrics.value("queue.pending") == 0
    finally:
        ensemble.close()


def test_a_lost_member_ends_its_jobs_and_the_others_go_on_until_every_member_is_lost():
    a, b = replay("hold"), replay("hold")
    ensemble = started(two(a, b))
    try:
        on_a = [ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "a"})) for _ in range(3)]
        on_b = ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "b"}))
        assert eventually(
            lambda: ensemble.snapshot()["groups"]["sim"]["running"] == 4, 10, every=0.01
        ), "timed out"
        on_loop(ensemble, a.on_lost, "the journal could not be resumed for 60 s")
        for handle in on_a:
            assert handle.wait(10) is Outcome.FAILED
            assert handle.reason == (
                "failed: the a member was lost (the journal could not be resumed for 60 s); "
                "what became of the job on the queue is unknown"
            )
        assert not on_b.done() and ensemble.exit == "completed" and not ensemble._stopping
        moved = ensemble.submit(spec())  # a was first: it goes to b now
        asked = ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "a"}))
        assert asked.wait(10) is Outcome.FAILED
        assert asked.reason == (
            "failed: it asks for the a member, which was lost (the journal could not be "
            "resumed for 60 s)"
        )
        assert eventually(lambda: moved.member_id is not None, 10, every=0.01), "timed out"
        assert where(moved) == "b"
        members = ensemble.snapshot()["members"]
        assert (members["a"]["failed"], members["a"]["running"], members["b"]["running"]) == (
            3,
            0,
            2,
        )
        on_loop(ensemble, b.on_lost, "gone")
        assert on_b.wait(10) is Outcome.FAILED and moved.wait(10) is Outcome.FAILED
        assert ensemble.wait(10)
        assert ensemble.exit == "error"
        assert ensemble.stop_reason == (
            "the a+b member was lost: every member was lost (a: the journal could not be "
            "resumed for 60 s; b: gone)"
        )
    finally:
        ensemble.close()


def test_a_rule_resubmits_a_failed_job_to_another_member():
    def first_fails(job: JobSpec) -> str:
        return "fail-exit1" if job.attempt == 1 else "success"

    rules = (
        "rules:\n  - trigger: job-fail\n    group: sim\n    action: {name: resubmit, member: b}\n"
    )
    ensemble = started(two(replay(kind_of=first_fails), replay(kind_of=first_fails)), rules)
    try:
        handle = ensemble.submit(spec())
        assert handle.wait(10) is Outcome.SUCCESS
        assert [str(a.member_id).partition("/")[0] for a in handle.attempts] == ["a", "b"]
        assert ensemble.actions[0]["detail"] == "attempt 2: unchanged, to the b member"
        members = ensemble.snapshot()["members"]
        assert (members["a"]["failed"], members["b"]["success"]) == (1, 1)
    finally:
        ensemble.close()


def test_rules_read_and_act_on_members():
    rules = """
jobs:
  - {name: sim, command: 'true', count: 3}
  - {name: post, command: 'true', member: b}
rules:
  - trigger: start
    action: {name: submit, label: sim, member: b}
  - trigger: metric
    name: count.@b.success
    when: 3
    action: {name: submit, label: post}
  - trigger: metric
    name: count.@b.success
    when: 4
    action: {name: grow, member: a, value: 2}
"""
    ensemble = started(two(), rules)
    assert ensemble.wait(10)
    try:
        snapshot = ensemble.snapshot()
        assert snapshot["members"]["b"]["success"] == 4 and "a" not in snapshot["members"]
        details = [entry["detail"] for entry in ensemble.actions]
        assert details == ["3 x sim to the b member", "1 x post", "a: replay member cannot grow"]
    finally:
        ensemble.close()


def test_a_failed_submission_ends_that_job_naming_the_member():
    faulty = FaultyMember(replay(), Faults(submit_error=1.0))
    ensemble = started(RouterMember({"a": faulty, "b": replay()}))
    try:
        handle = ensemble.submit(spec())
        assert handle.wait(10) is Outcome.FAILED
        assert handle.reason == (
            "failed: submission to the a member failed: injected fault: the member refused submit"
        )
    finally:
        ensemble.close()


class _Refusing(ReplayMember):
    async def start(self, emit):
        raise MemberError("cannot connect to a Flux instance")


class _Closing(ReplayMember):
    closed = False

    async def close(self):
        self.closed = True


def test_a_member_that_cannot_start_is_named_and_the_others_are_closed():
    other = _Closing(JOURNALS)
    router = RouterMember({"hpc": _Refusing(JOURNALS), "here": other})
    with pytest.raises(MemberError, match=r"^the hpc member \(replay\): cannot connect"):
        Ensemble(router).start()
    assert other.closed


class _EndsWithController(ReplayMember):
    """As the local member: its jobs end with the controller, and none is found again."""

    jobs_end_with_controller = True

    async def adopt(self, jobs):
        return {}


def test_a_resumed_run_adopts_per_member_and_starts_again_what_ended_with_the_controller(
    tmp_path: Path,
):
    local = _EndsWithController(JOURNALS, kind_of=lambda spec: "hold", remember=True)
    queue = ReplayMember(JOURNALS, kind_of=lambda spec: "hold", remember=True)

    def router() -> RouterMember:
        return RouterMember({"here": local, "hpc": queue})

    assert router().jobs_end_with_controller
    first = Ensemble(router(), state=StateJournal(tmp_path / "state"))
    first.start()
    kept = first.submit(spec(attributes={MEMBER_ATTRIBUTE: "hpc"}), identity="kept")
    again = first.submit(spec(attributes={MEMBER_ATTRIBUTE: "here"}), identity="again")
    assert eventually(lambda: first.snapshot()["groups"]["sim"]["running"] == 2, 10, every=0.01), (
        "timed out"
    )
    assert (kept.member_id, again.member_id) == ("hpc/1", "here/1")
    first.request_action({"name": "route", "label": "post", "member": "hpc"})
    dies_after_a_flush(first)

    second = Ensemble(router(), state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        assert second.member.routes == {"post": "hpc"}  # a route survives the restart
        kept, again = (
            second.submit(spec(), identity="kept"),
            second.submit(spec(), identity="again"),
        )
        assert eventually(
            lambda: second.snapshot()["groups"]["sim"]["running"] == 2, 10, every=0.01
        ), "timed out"
        assert (kept.member_id, again.member_id) == ("hpc/1", "here/2")
        members = second.snapshot()["members"]
        assert (members["here"]["submitted"], members["here"]["running"]) == (1, 1)
        assert (members["hpc"]["submitted"], members["hpc"]["running"]) == (1, 1)
        on_loop(second, local.finish_held, 2)  # the first controller's, and the new one
        on_loop(second, queue.finish_held, 1)
        assert kept.wait(10) is Outcome.SUCCESS and again.wait(10) is Outcome.SUCCESS
        assert len(queue._history) == 1  # adopted, never submitted twice
    finally:
        second.close()


class _SlowToAdopt(ReplayMember):
    """Looks for its jobs over a network: its adopt waits, letting the loop run meanwhile."""

    async def adopt(self, jobs):
        await asyncio.sleep(0.05)
        return await super().adopt(jobs)


def test_events_one_member_replays_while_another_is_asked_are_kept(tmp_path: Path):
    a = ReplayMember(JOURNALS, kind_of=lambda spec: "hold", remember=True)
    b = _SlowToAdopt(JOURNALS, kind_of=lambda spec: "hold", remember=True)
    first = Ensemble(RouterMember({"a": a, "b": b}), state=StateJournal(tmp_path / "state"))
    first.start()
    first.submit(spec(attributes={MEMBER_ATTRIBUTE: "a"}), identity="ended")
    first.submit(spec(attributes={MEMBER_ATTRIBUTE: "b"}), identity="running")
    assert eventually(lambda: first.snapshot()["groups"]["sim"]["running"] == 2, 10, every=0.01), (
        "timed out"
    )
    dies_after_a_flush(first)
    on_loop_of(first, a.finish_held, 1)  # a's job ends while no controller follows it

    second = Ensemble(RouterMember({"a": a, "b": b}), state=StateJournal(tmp_path / "state"))
    second.start()
    try:
        # a's replayed end arrived while b was still asked: held, not dropped.
        assert eventually(
            lambda: second.snapshot()["groups"]["sim"].get("success") == 1, 10, every=0.01
        ), "timed out"
        running = second.submit(spec(), identity="running")  # follows b's adopted job
        on_loop(second, b.finish_held, 1)
        assert running.wait(10) is Outcome.SUCCESS
        assert len(a._history) == len(b._history) == 1  # none submitted twice
    finally:
        second.close()


def on_loop_of(ensemble: Ensemble, function, *args) -> None:
    """Run `function` on the loop of a controller that died (its loop is stopped, not closed)."""
    ensemble._loop.run_until_complete(_call(function, *args))


async def _call(function, *args):
    return function(*args)


def test_a_members_events_reach_their_jobs_directly_and_the_router_still_notes_starts_and_ends(
    monkeypatch,
):
    """With a router, each member emits to the controller's own intake for it: the events of a
    job the controller follows go to the job without the router's relay; the controller tells
    the router their start and end (pending times, open jobs)."""
    relayed: list[str] = []
    relay = router_module._Part.relay

    def counted(part, event):
        relayed.append(event.name)
        return relay(part, event)

    monkeypatch.setattr(router_module._Part, "relay", counted)
    member = two(policy="least-pending")
    ensemble = started(member)
    try:
        handles = [ensemble.submit(spec()) for _ in range(4)]
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 4
        parts = member._parts.values()
        assert not member.open_jobs  # the ends were told
        assert all(not part.waiting for part in parts)
        assert sum(len(part.pending_times) for part in parts) == 4  # and the starts
        # The replay member plays a job's events after its submission returned, when the
        # controller follows the job already: none needed the relay.
        assert relayed == []
        assert ensemble.snapshot()["groups"]["sim"]["success"] == 4
    finally:
        ensemble.close()


def test_an_attempts_end_counts_its_outcome_under_its_group_and_its_member():
    """A timeout is a failure with a name of its own: counted as `timeout` and as `failed`,
    under the group and under the member that ran it, once each."""
    ensemble = started(two(replay("timeout"), replay("timeout")))
    try:
        handle = ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "b"}))
        assert handle.wait(10) is Outcome.TIMEOUT
        snapshot = ensemble.snapshot()
        for counts in (snapshot["groups"]["sim"], snapshot["members"]["b"]):
            assert {k: counts[k] for k in ("finished", "timeout", "failed", "running")} == {
                "finished": 1,
                "timeout": 1,
                "failed": 1,
                "running": 0,
            }
        assert "a" not in snapshot["members"]
    finally:
        ensemble.close()


def test_a_resumed_job_its_member_forgot_ends_counted_under_that_member(tmp_path: Path):
    """The controller never follows such a job again (nothing of it will come): its end is
    counted under the member it was submitted to, as its start was."""
    first = Ensemble(
        RouterMember({"a": replay(), "hpc": replay("hold", remember=True)}),
        state=StateJournal(tmp_path / "state"),
    )
    first.start()
    first.submit(spec(attributes={MEMBER_ATTRIBUTE: "hpc"}), identity="forgotten")
    assert eventually(lambda: first.snapshot()["groups"]["sim"]["running"] == 1, 10, every=0.01), (
        "timed out"
    )
    dies_after_a_flush(first)

    forgetful = ReplayMember(JOURNALS, kind_of=lambda spec: "hold", remember=True)
    second = Ensemble(
        RouterMember({"a": replay(), "hpc": forgetful}), state=StateJournal(tmp_path / "state")
    )
    second.start()  # the job ends as it resumes: nothing follows it any more
    try:
        assert not second.follows("forgotten")
        hpc = second.snapshot()["members"]["hpc"]
        assert {k: hpc[k] for k in ("submitted", "running", "finished", "failed")} == {
            "submitted": 1,
            "running": 0,
            "finished": 1,
            "failed": 1,
        }
    finally:
        second.close()


def test_a_members_counters_are_reported_to_the_rules_only_when_a_rule_reads_a_member():
    """Without a rule on a member's metrics, counting under a member does not make the rules
    look at its pseudo-group; the counters are kept all the same (summaries, a later read)."""
    metrics = Metrics()
    metrics.report_members = False
    metrics.count("sim", "pending")
    metrics.count("@a", "pending")
    metrics.shift("sim", "pending", "running", "@a")
    metrics.ended("sim", Outcome.OOM, "@a")
    assert metrics.changed == {"sim"}
    assert [metrics.value(f"count.@a.{key}") for key in ("running", "oom", "failed")] == [1, 1, 1]
    metrics.report_members = True
    metrics.ended("sim", Outcome.SUCCESS, "@a")
    assert metrics.changed == {"sim", "@a"}

    reported = {}
    for name in ("count.@a.running", "mean.@a-pending", "count.sim.running", "queue.pending"):
        rule = f"rules:\n  - {{trigger: metric, name: {name}, when: 5, action: {{name: grow}}}}\n"
        ensemble = Ensemble(two(), parse(rule, "t.yaml", ["a", "b"]))
        reported[name] = ensemble.metrics.report_members
        ensemble._loop.close()
    assert reported == {
        "count.@a.running": True,
        "mean.@a-pending": True,
        "count.sim.running": False,
        "queue.pending": False,
    }


def test_the_router_knows_a_job_while_the_controller_ends_it_and_reads_no_id_for_it(
    monkeypatch,
):
    """The controller tells the router a job's end after it ended the job: while it does (its
    done callbacks run then), the router still has the job among its open jobs, so asking for
    its log paths and forgetting it read no id. Afterwards nothing of it is left, in the router
    or in the controller's tables per member."""
    a = replay("hold")
    member = two(a)
    ensemble = started(member)
    read: list[str] = []
    split = RouterMember._split

    def reading(router, jobid):
        if jobid not in router.open_jobs:
            read.append(jobid)
        return split(router, jobid)

    monkeypatch.setattr(RouterMember, "_split", reading)
    try:
        seen = []
        handles = [ensemble.submit(spec()) for _ in range(3)]
        for handle in handles:
            handle.add_done_callback(lambda h: seen.append(h.member_id in member.open_jobs))
        assert eventually(
            lambda: ensemble.snapshot()["groups"]["sim"]["running"] == 3, 10, every=0.01
        ), "timed out"
        on_loop(ensemble, a.finish_held, 3)
        assert [h.wait(10) for h in handles] == [Outcome.SUCCESS] * 3
        assert seen == [True] * 3
        assert read == []
        assert not member.open_jobs and not any(ensemble._direct._tables.values())
    finally:
        ensemble.close()


def test_a_lost_members_jobs_leave_nothing_in_the_router_or_the_controllers_tables():
    a = replay("hold")
    member = two(a)
    ensemble = started(member)
    try:
        handles = [ensemble.submit(spec(attributes={MEMBER_ATTRIBUTE: "a"})) for _ in range(2)]
        assert eventually(
            lambda: ensemble.snapshot()["groups"]["sim"]["running"] == 2, 10, every=0.01
        ), "timed out"
        assert len(member.open_jobs) == 2
        on_loop(ensemble, a.on_lost, "gone")
        assert [h.wait(10) for h in handles] == [Outcome.FAILED] * 2
        assert not member.open_jobs and not member._parts["a"].waiting
        assert not any(ensemble._direct._tables.values())
    finally:
        ensemble.close()
