"""The Flux member against flux-python faked at its boundary, replaying real recorded journals."""

from __future__ import annotations

import asyncio
import errno
import importlib.abc
import logging
import sys
import threading
from collections import defaultdict
from typing import Any

import flux_fake
import pytest

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.members import create_member
from ensemble_core.members.flux import FluxMember, decode_idset, encode_idset
from ensemble_core.spec import JobSpec

#: The jobs of journal-basic.jsonl, in the order they were submitted, as JobSpecs.
BASIC = {
    "success": JobSpec(command=["true"], group="ok"),
    "fail-exit1": JobSpec(command=["false"], group="bad"),
    "fail-exit3": JobSpec(command=["sh", "-c", "exit 3"], group="bad"),
    "timeout": JobSpec(command=["sleep", "30"], walltime=1, group="slow"),
    "cancel": JobSpec(command=["sleep", "30"], group="slow"),
    "multinode": JobSpec(command=["hostname"], nodes=2, tasks=2, group="wide"),
    "unsatisfiable": JobSpec(command=["true"], nodes=8, tasks=8, group="wide"),
}
EXPECTED = {
    "success": (Outcome.SUCCESS, 0),
    "fail-exit1": (Outcome.FAILED, 1),
    "fail-exit3": (Outcome.FAILED, 3),
    "timeout": (Outcome.TIMEOUT, None),
    "cancel": (Outcome.CANCELLED, None),
    "multinode": (Outcome.SUCCESS, 0),
    "unsatisfiable": (Outcome.UNSATISFIABLE, None),
}


class Run:
    """One member's life on a fake instance: what it emitted, per job."""

    def __init__(self, instance: flux_fake.Instance, **settings: Any) -> None:
        self.instance = instance
        self.member = FluxMember(reconnect_delay=0.0, **settings)
        self.events: dict[int, list[JobEvent]] = defaultdict(list)
        self.cleaned: set[int] = set()
        self.ids: list[int] = []
        self.off_loop_emits = 0

    def emit(self, event: JobEvent) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.off_loop_emits += 1
        self.events[event.jobid].append(event)
        if event.name == "clean":
            self.cleaned.add(event.jobid)

    def record(self, jobid: int) -> AttemptRecord:
        attempt = AttemptRecord()
        for event in self.events[jobid]:
            attempt.observe(event)
        return attempt

    def delivered(self, jobid: int) -> list[tuple[str, float]]:
        return [(e.name, e.timestamp) for e in self.events[jobid]]

    async def __call__(self, specs: list[JobSpec], cancel: tuple[int, ...] = ()) -> Run:
        await self.member.start(self.emit)
        try:
            self.ids = list(await asyncio.gather(*(self.member.submit(s) for s in specs)))
            for index in cancel:
                await self.member.cancel(self.ids[index])
            async with asyncio.timeout(60):
                while not self.cleaned >= set(self.ids):
                    await asyncio.sleep(0.005)
        finally:
            await self.member.close()
        return self


def run(instance: flux_fake.Instance, specs: list[JobSpec], **kwargs: Any) -> Run:
    settings = kwargs.pop("settings", {})
    return asyncio.run(Run(instance, **settings)(specs, **kwargs))


@pytest.fixture
def basic(monkeypatch):
    def make(**options: Any) -> flux_fake.Instance:
        instance = flux_fake.Instance(flux_fake.load("journal-basic.jsonl"), **options)
        flux_fake.install(monkeypatch, instance)
        return instance

    return make


def check_basic_outcomes(done: Run, eventlog: bool = False) -> None:
    instance = done.instance
    assert [instance.kinds[jobid] for jobid in done.ids] == list(BASIC)
    for jobid in done.ids:
        kind = instance.kinds[jobid]
        attempt = done.record(jobid)
        assert (attempt.outcome, attempt.exit_code if not attempt.exception else None) == (
            EXPECTED[kind]
        ), kind
        assert done.delivered(jobid) == instance.recorded(jobid, eventlog), kind
    assert done.off_loop_emits == 0


@pytest.mark.parametrize("break_after", [None, 1, 23, 40, 60])
def test_each_recorded_outcome_comes_out_right(basic, break_after):
    instance = basic(break_after=break_after)
    done = run(instance, list(BASIC.values()), cancel=(4,))
    check_basic_outcomes(done)
    cancelled = done.ids[4]
    assert instance.cancels == [(cancelled, "cancelled by the ensemble")]
    assert "cancel" in done.record(cancelled).reason
    expected = [(False, False)] if break_after is None else [(False, False), (True, True)]
    assert instance.consumers == expected


def test_submitted_jobspec_carries_the_spec_and_the_callers_cwd(basic, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENSEMBLE_PROBE", "seen")
    instance = basic()
    specs = list(BASIC.values())
    specs[5] = specs[5].model_copy(update={"environment": {"ENSEMBLE_PROBE": "spec wins"}})
    done = run(instance, specs, cancel=(4,))
    first = instance.jobspecs[done.ids[0]]
    assert first["tasks"][0]["command"] == ["true"]
    assert first["attributes"]["user"]["group"] == "ok"
    assert first["attributes"]["system"]["cwd"] == str(tmp_path)
    assert first["attributes"]["system"]["environment"]["ENSEMBLE_PROBE"] == "seen"
    wide = instance.jobspecs[done.ids[5]]
    assert wide["resources"][0] == {
        "type": "node",
        "count": 2,
        "with": [
            {"type": "slot", "count": 1, "with": [{"type": "core", "count": 1}], "label": "task"}
        ],
    }
    assert wide["attributes"]["system"]["environment"]["ENSEMBLE_PROBE"] == "spec wins"
    assert instance.jobspecs[done.ids[3]]["attributes"]["system"]["duration"] == 1.0


def test_events_of_other_users_jobs_are_not_forwarded(basic):
    lines = flux_fake.load("journal-basic.jsonl")
    foreign = next(line["id"] for line in lines if line["kind"] == "multinode")
    instance = basic(foreign=(foreign,))
    specs = [spec for kind, spec in BASIC.items() if kind != "multinode"]
    done = run(instance, specs, cancel=(4,))
    assert foreign not in done.events
    assert foreign not in done.ids
    assert len(done.ids) == 6
    assert all(
        done.record(jobid).outcome is EXPECTED[instance.kinds[jobid]][0] for jobid in done.ids
    )


@pytest.mark.parametrize("break_after", [0, 5, 17, 30, 36, 38])
def test_broken_stream_resumes_from_the_backlog_without_loss_or_double_count(
    monkeypatch, caplog, break_after
):
    lines = flux_fake.load("journal-backlog.jsonl")
    instance = flux_fake.Instance(lines, break_after=break_after)
    flux_fake.install(monkeypatch, instance)
    spec = JobSpec(command=["true"])
    with caplog.at_level(logging.WARNING, logger="ensemble_core.members.flux_stream"):
        done = run(instance, [spec] * 4)
    assert instance.consumers == [(False, False), (True, True)]
    assert any("broke" in r.getMessage() for r in caplog.records)
    assert done.member.describe()["reconnects"] == 1
    for jobid in done.ids:
        assert done.delivered(jobid) == instance.recorded(jobid)
        assert done.record(jobid).outcome is Outcome.SUCCESS
    assert sum(len(events) for events in done.events.values()) == len(instance.records)


def test_300_recorded_jobs_all_succeed_with_every_event_once(monkeypatch):
    instance = flux_fake.Instance(flux_fake.load("journal-300.jsonl"))
    flux_fake.install(monkeypatch, instance)
    done = run(instance, [JobSpec(command=["true"])] * 300)
    assert len(set(done.ids)) == 300
    assert all(done.record(jobid).outcome is Outcome.SUCCESS for jobid in done.ids)
    assert sum(len(events) for events in done.events.values()) == 3302
    assert all(done.delivered(jobid) == instance.recorded(jobid) for jobid in done.ids)


def test_guest_falls_back_to_per_job_eventlogs_with_one_warning(basic, caplog):
    instance = basic(refuse_journal=True)
    with caplog.at_level(logging.WARNING, logger="ensemble_core.members.flux_stream"):
        done = run(instance, list(BASIC.values()), cancel=(4,))
    check_basic_outcomes(done, eventlog=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Request requires owner credentials" in warnings[0]
    assert "eventlog" in warnings[0]
    assert done.member.describe()["events"] == "per-job eventlog watch"


def test_describe_and_log_paths(basic):
    instance = basic()
    spec = JobSpec(command=["true"], cwd="/scratch/run", stdout="out.log", stderr="/abs/err.log")
    runner = Run(instance, flux_uri="local:///tmp/flux-test/local")

    async def scenario() -> None:
        await runner.member.start(runner.emit)
        jobid = await runner.member.submit(spec)
        assert runner.member.log_paths(jobid) == ["/scratch/run/out.log", "/abs/err.log"]
        info = runner.member.describe()
        assert info["member"] == "flux"
        assert info["uri"] == "local:///tmp/flux-test/local"
        assert info["flux_version"] == "0.88.0"
        assert info["events"] == "job journal"
        await runner.member.close()

    asyncio.run(scenario())


def test_output_directories_are_made_before_submission(basic, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    spec = JobSpec(command=["true"], stdout="logs/a/out.log", stderr="logs/b/err.log")
    done = run(basic(), [spec, *list(BASIC.values())[1:]], cancel=(4,))
    assert done.member.log_paths(done.ids[0]) == [
        str(tmp_path / "logs/a/out.log"),
        str(tmp_path / "logs/b/err.log"),
    ]
    assert (tmp_path / "logs/a").is_dir() and (tmp_path / "logs/b").is_dir()


def test_refused_submission_is_a_clear_member_error(basic):
    instance = basic()
    instance.refuse_submit = "unsatisfiable request: node count 8 > 2"

    async def scenario() -> None:
        member = FluxMember()
        await member.start(lambda event: None)
        try:
            with pytest.raises(MemberError, match="Flux refused the job: unsatisfiable request"):
                await member.submit(JobSpec(command=["true"], nodes=8, tasks=8))
        finally:
            await member.close()

    asyncio.run(scenario())


def test_cancelling_an_unknown_or_finished_job_is_quiet(basic):
    basic()

    async def scenario() -> None:
        member = FluxMember()
        await member.start(lambda event: None)
        await member.cancel(12345)
        await member.close()

    asyncio.run(scenario())


def test_shrink_drains_highest_ranks_and_grow_undrains_only_its_own(basic):
    instance = basic(size=5)
    instance.drained[4] = "admin: bad memory"

    async def scenario() -> list[str]:
        member = FluxMember()
        await member.start(lambda event: None)
        said = [
            await member.shrink(2),
            await member.shrink(5),
            await member.shrink(1),
        ]
        drained_by_member = member.describe()["drained_by_member"]
        said += [await member.grow(1), await member.grow(5), await member.grow(1)]
        await member.close()
        return [*said, drained_by_member]

    said = asyncio.run(scenario())
    assert said[0] == ("flux member drained ranks 2-3: running jobs finish, no new ones start")
    assert said[1].startswith("flux member drained ranks 1 (asked for 5; rank 0 is never drained)")
    assert said[2].startswith("flux member cannot shrink")
    assert said[6] == "1-3"
    assert said[3] == "flux member undrained ranks 1"
    assert said[4] == "flux member undrained ranks 2-3 (asked for 5; it had drained only those)"
    assert said[5].startswith("flux member cannot grow")
    assert instance.drained == {4: "admin: bad memory"}


@pytest.mark.parametrize("undrain_on_close", [True, False])
def test_close_gives_back_what_shrink_took_unless_told_not_to(basic, undrain_on_close):
    instance = basic(size=4)
    instance.drained[3] = "admin"

    async def scenario() -> str:
        member = FluxMember(undrain_on_close=undrain_on_close)
        await member.start(lambda event: None)
        said = await member.shrink(2)
        await member.close()
        return said

    assert asyncio.run(scenario()).startswith("flux member drained ranks 1-2")
    assert set(instance.drained) == ({3} if undrain_on_close else {1, 2, 3})


def test_grow_leaves_a_rank_someone_else_drained_again(basic):
    instance = basic(size=3)

    async def scenario() -> list[str]:
        member = FluxMember()
        await member.start(lambda event: None)
        said = [await member.shrink(1)]
        instance.drained[2] = "admin: bad disk"  # an administrator took rank 2 over
        said.append(await member.grow(1))
        instance.refuse_drain = PermissionError(errno.EPERM, "Operation not permitted")
        said.append(await member.shrink(1))
        said.append(await member.shrink(0))
        await member.close()
        return said

    said = asyncio.run(scenario())
    assert said[0] == "flux member drained ranks 2: running jobs finish, no new ones start"
    assert said[1].startswith("flux member cannot grow: no rank it drained is still drained by it")
    assert said[2] == "flux member could not shrink: Operation not permitted"
    assert said[3] == "flux member: nothing to shrink (asked for fewer than 1 node)"
    assert instance.drained == {2: "admin: bad disk"}


def test_idsets_round_trip():
    assert encode_idset([5, 1, 2, 3, 8, 9]) == "1-3,5,8-9"
    assert decode_idset("[1-3,5,8-9]") == {1, 2, 3, 5, 8, 9}
    assert decode_idset("") == set()


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes `import flux` fail the way a given broken install does."""

    def __init__(self, error: ImportError) -> None:
        self.error = error

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "flux" or fullname.startswith("flux."):
            raise self.error


def start_error(monkeypatch, error: ImportError | None) -> str:
    for name in [n for n in sys.modules if n == "flux" or n.startswith("flux.")]:
        monkeypatch.delitem(sys.modules, name)
    if error is not None:
        monkeypatch.setattr(sys, "meta_path", [_Refuse(error), *sys.meta_path])
    member = create_member("flux")
    with pytest.raises(MemberError) as caught:
        asyncio.run(member.start(lambda event: None))
    return str(caught.value)


def test_missing_flux_python_says_what_to_install(monkeypatch):
    message = start_error(monkeypatch, ModuleNotFoundError("No module named 'flux'", name="flux"))
    assert message.startswith("flux-python is not installed.")
    assert "pip install 'ensemble-executors[flux]'" in message
    assert "libflux-core" in message


def test_missing_libflux_core_says_to_install_flux_core(monkeypatch):
    text = "libflux-core.so.2: cannot open shared object file: No such file or directory"
    message = start_error(monkeypatch, ImportError(text, name="_flux._core"))
    assert "cannot load libflux-core" in message
    assert text in message
    assert "Install flux-core" in message


def test_missing_ply_says_to_install_the_extra(monkeypatch):
    message = start_error(monkeypatch, ModuleNotFoundError("No module named 'ply'", name="ply"))
    assert "No module named 'ply'" in message
    assert "pip install 'ensemble-executors[flux]'" in message


def test_no_instance_says_to_start_one(basic, monkeypatch):
    instance = basic()
    instance.unreachable = True
    monkeypatch.delenv("FLUX_URI", raising=False)
    member = FluxMember()
    with pytest.raises(MemberError) as caught:
        asyncio.run(member.start(lambda event: None))
    message = str(caught.value)
    assert "FLUX_URI is not set" in message
    assert "`flux start`" in message
    assert "flux_uri" in message


def test_unreachable_uri_is_named(basic, monkeypatch):
    basic().unreachable = True
    member = FluxMember(flux_uri="local:///nowhere/local")
    with pytest.raises(MemberError, match="at local:///nowhere/local: No such file or directory"):
        asyncio.run(member.start(lambda event: None))


def test_the_controller_gets_every_outcome_through_the_flux_member(basic):
    from ensemble_core.api import open_ensemble

    instance = basic()
    ensemble = open_ensemble("flux", member_settings={"flux_uri": "local:///fake/local"})
    try:
        handles = [ensemble.submit(spec) for spec in BASIC.values()]
        while not handles[4].member_id:
            assert not handles[4].wait(0.01)
        ensemble.cancel(handles[4])
        outcomes = [handle.wait(60) for handle in handles]
    finally:
        ensemble.close()
    assert outcomes == [outcome for outcome, _code in EXPECTED.values()]
    assert [instance.kinds[handle.member_id] for handle in handles] == list(BASIC)
    assert [handles[1].exit_code, handles[2].exit_code] == [1, 3]
