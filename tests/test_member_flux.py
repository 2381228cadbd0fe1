"""The Flux member against flux-python faked at its boundary, replaying real recorded journals."""

from __future__ import annotations

import asyncio
import errno
import importlib.abc
import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import flux_fake
import pytest

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.members import create_member
from ensemble_core.members.flux import FluxMember, decode_idset, encode_idset
from ensemble_core.members.flux_oom import (
    find_report as find_oom_report,
)
from ensemble_core.members.flux_oom import (
    killed_by_sigkill,
    report_in_file,
    report_in_output_eventlog,
)
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


class Run(flux_fake.Emitted):
    """One member's life on a fake instance: what it emitted, per job."""

    def __init__(
        self,
        instance: flux_fake.Instance,
        fail_on: Callable[[JobEvent], bool] | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(FluxMember(reconnect_delay=0.0, **settings))
        self.instance = instance
        self.fail_on = fail_on  # the controller raises on these events
        self.ids: list[int] = []
        self.off_loop_emits = 0

    def emit(self, event: JobEvent) -> None:
        if self.fail_on is not None and self.fail_on(event):
            raise RuntimeError("rule engine exploded")
        if threading.current_thread() is not threading.main_thread():
            self.off_loop_emits += 1
        super().emit(event)

    async def __call__(self, specs: list[JobSpec], cancel: tuple[int, ...] = ()) -> Run:
        await self.member.start(self.emit)
        try:
            self.ids = list(await asyncio.gather(*(self.member.submit(s) for s in specs)))
            for index in cancel:
                await self.member.cancel(self.ids[index])
            await self.until_clean(self.ids)
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
    expected = [(False, True)] if break_after is None else [(False, True), (True, True)]
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
    assert instance.consumers == [(False, True), (True, True)]
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
    assert done.logs[done.ids[0]] == [
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


def test_a_lost_node_is_a_node_failure_as_flux_reports_it(monkeypatch):
    """Recorded: broker rank 1 killed under two 2-node jobs. The job that needs every rank gets
    `exec` "node failure on vm (rank 1)"; the one told only rank 0 is critical gets a non-fatal
    `node-failure` (severity 2), runs on and succeeds."""
    instance = flux_fake.Instance(flux_fake.load("journal-node-failure.jsonl"))
    flux_fake.install(monkeypatch, instance)
    done = run(instance, [JobSpec(command=["sleep", "300"], nodes=2, tasks=2)] * 2)
    critical, noncritical = (done.record(jobid) for jobid in done.ids)
    assert [instance.kinds[jobid] for jobid in done.ids] == ["critical", "noncritical"]
    assert critical.outcome is Outcome.NODE_FAILURE
    assert critical.reason == "node-failure: node failure on vm (rank 1)"
    assert noncritical.outcome is Outcome.SUCCESS
    assert any(e.context.get("type") == "node-failure" for e in done.events[done.ids[1]])


@pytest.fixture
def oom_instance(monkeypatch):
    instance = flux_fake.Instance(flux_fake.load("journal-oom.jsonl"))
    outputs = json.loads((flux_fake.FIXTURES / "oom-outputs.json").read_text())
    instance.outputs = {kind: {"guest.output": o["guest.output"]} for kind, o in outputs.items()}
    flux_fake.install(monkeypatch, instance)
    return instance, outputs


def test_the_job_shells_oom_report_makes_an_oom_outcome(oom_instance, tmp_path):
    """Recorded with a real 64 MiB limit (tests/flux_oom_bridge.py): the shell's oom plugin
    reported in the KVS output eventlog (oom-kvs) or in the stderr file (oom-file); a job
    that killed itself with SIGKILL (same finish status 35072) stays failed."""
    instance, outputs = oom_instance
    stderr = tmp_path / "hog.err"
    stderr.write_text(outputs["oom-file"]["stderr"])
    specs = [
        JobSpec(command=["hog"]),
        JobSpec(command=["hog"], stdout=str(tmp_path / "hog.out"), stderr=str(stderr)),
        JobSpec(command=["sh", "-c", "kill -9 $$"]),
    ]
    done = run(instance, specs)
    assert [instance.kinds[jobid] for jobid in done.ids] == ["oom-kvs", "oom-file", "sigkill"]
    oom_kvs, oom_file, sigkill = (done.record(jobid) for jobid in done.ids)
    report = "Memory cgroup out of memory: killed 1 task on vm. memory.peak = 64M"
    assert (oom_kvs.outcome, oom_kvs.reason) == (Outcome.OOM, f"oom: {report}")
    assert (oom_file.outcome, oom_file.reason) == (Outcome.OOM, f"oom: {report}")
    assert (sigkill.outcome, sigkill.exit_code) == (Outcome.FAILED, 137)
    for jobid in done.ids[:2]:
        names = [event.name for event in done.events[jobid]]
        assert names[-2:] == ["exception", "clean"]
        assert done.delivered(jobid)[:-2] == instance.recorded(jobid)[:-1]
    # the file held the report, so only the jobs without one asked the KVS
    assert instance.lookups == [done.ids[0], done.ids[2]]
    assert done.member.held == dict.fromkeys(done.member.held, 0)


def test_oom_report_parsing_and_sigkill_statuses():
    assert killed_by_sigkill(35072)  # the shell's exit 137, as recorded
    assert killed_by_sigkill(9)  # a raw SIGKILL wait status
    assert not killed_by_sigkill(36608)  # exit 143 (SIGTERM), as after a lost node
    assert not killed_by_sigkill(256)
    assert not killed_by_sigkill(0)
    text = "output\nflux-shell[1]: ERROR: oom: Memory cgroup out of memory: killed 2 tasks on n1.\n"
    assert report_in_file(text) == ["Memory cgroup out of memory: killed 2 tasks on n1."]
    assert report_in_file("flux-shell[0]: ERROR: other: Memory cgroup out of memory\n") == []
    noise = '{"name":"log","context":{"component":"shell","message":"x"}}\nnot json "log"\n'
    assert report_in_output_eventlog(noise) == []


class OutputLookups:
    """A handle that answers `job-info.lookup` with one output eventlog, and counts the asks."""

    def __init__(self, output: str) -> None:
        self.output, self.asked = output, 0

    def rpc(self, topic: str, payload: dict) -> flux_fake.Future:
        assert (topic, payload["keys"]) == ("job-info.lookup", ["guest.output"])
        self.asked += 1
        return flux_fake.Future({"guest.output": self.output})


def test_the_oom_plugins_own_errors_are_no_oom(tmp_path):
    """Only the plugin's report of a kill counts; its complaint about reading the file does
    not, and is left out of the note. The KVS is asked only when the files hold no report."""
    stderr = tmp_path / "err"
    lines = ["error reading memory.events", "Memory cgroup out of memory: killed 1 task on n0."]
    stderr.write_text("".join(f"flux-shell[0]: ERROR: oom: {line}\n" for line in lines))
    kvs = OutputLookups("")
    assert find_oom_report(kvs, 1, [str(stderr)]) == lines[1]
    assert kvs.asked == 0
    stderr.write_text(f"flux-shell[0]: ERROR: oom: {lines[0]}\n")
    assert find_oom_report(kvs, 1, [str(stderr), str(tmp_path / "missing")]) is None
    assert kvs.asked == 1


def test_finished_jobs_leave_nothing_behind(monkeypatch):
    """3,000 jobs (the recorded 300, ten times over, with fresh ids) in batches of 300, and
    another user's jobs interleaved: whatever the member holds is for jobs still running."""
    recorded = flux_fake.load("journal-300.jsonl")
    lines = flux_fake.repeat(recorded, 10)
    every_seventh = list(dict.fromkeys(line["id"] for line in recorded))[::7]
    foreign = tuple(jobid + copy * 10**12 for copy in range(10) for jobid in every_seventh)
    instance = flux_fake.Instance(lines, foreign=foreign)
    flux_fake.install(monkeypatch, instance)
    batch = 300 - len(every_seventh)  # our jobs of one copy
    runner = Run(instance)
    peak: dict[str, int] = defaultdict(int)

    def emit(event: JobEvent) -> None:
        runner.emit(event)
        for key, value in runner.member.held.items():
            peak[key] = max(peak[key], value)

    async def scenario() -> list[dict[str, int]]:
        await runner.member.start(emit)
        after = []
        try:
            for _ in range(10):
                ids = await asyncio.gather(
                    *(runner.member.submit(JobSpec(command=["true"])) for _ in range(batch))
                )
                runner.ids += ids
                async with asyncio.timeout(60):
                    while not runner.cleaned >= set(runner.ids):
                        await asyncio.sleep(0.005)
                after.append(runner.member.held)
        finally:
            await runner.member.close()
        return after

    after = asyncio.run(scenario())
    assert len(set(runner.ids)) == 10 * batch > 2500
    assert all(runner.record(jobid).outcome is Outcome.SUCCESS for jobid in runner.ids)
    assert after == [dict.fromkeys(after[0], 0)] * 10
    assert max(peak.values()) <= batch
    assert not set(foreign) & set(runner.events)


BROKEN_START = ("start", "fail-exit1")


def test_the_controller_failing_on_one_job_ends_that_job_alone(basic):
    """An emit that raises for one job's `start`: that job gets a `member` exception and
    `clean`, its Flux job is cancelled, the others run on; nothing reaches the loop."""
    instance = basic()
    runner = Run(instance, fail_on=lambda e: (e.name, instance.kinds[e.jobid]) == BROKEN_START)
    loop_errors: list[dict] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        await runner(list(BASIC.values()), cancel=(4,))

    asyncio.run(scenario())
    failed = runner.ids[1]
    outcomes = [runner.record(jobid).outcome for jobid in runner.ids]
    assert outcomes == [
        Outcome.FAILED if j == failed else EXPECTED[instance.kinds[j]][0] for j in runner.ids
    ]
    assert runner.record(failed).reason == (
        "failed: the ensemble could not handle its start event: rule engine exploded"
    )
    assert [e.name for e in runner.events[failed]][-2:] == ["exception", "clean"]
    assert sum(e.name == "clean" for e in runner.events[failed]) == 1
    assert sorted(instance.cancels) == sorted(
        [(failed, "cancelled by the ensemble"), (runner.ids[4], "cancelled by the ensemble")]
    )
    assert runner.record(runner.ids[2]).exit_code == 3
    assert loop_errors == []


def test_an_event_flux_python_cannot_give_ends_its_job_alone(monkeypatch):
    lines = flux_fake.load("journal-basic.jsonl")
    broken = next(
        i for i, r in enumerate(lines) if r["kind"] == "fail-exit3" and r["name"] == "alloc"
    )
    lines[broken] = {**lines[broken], "context": 42}  # not a mapping: dict(42) raises
    instance = flux_fake.Instance(lines)
    flux_fake.install(monkeypatch, instance)
    done = run(instance, list(BASIC.values()), cancel=(4,))
    jobid = done.ids[2]
    assert done.record(jobid).outcome is Outcome.FAILED
    assert "could not read a Flux event of this job" in done.record(jobid).reason
    assert (jobid, "cancelled by the ensemble") in instance.cancels
    assert sum(e.name == "clean" for e in done.events[jobid]) == 1
    others = [j for j in done.ids if j != jobid]
    assert [done.record(j).outcome for j in others] == [
        EXPECTED[instance.kinds[j]][0] for j in others
    ]


def test_a_stream_that_cannot_be_resumed_calls_on_lost_once(basic, caplog):
    instance = basic(break_after=20)
    lost: list[tuple[str, bool]] = []
    member = FluxMember(reconnect_delay=0.05, reconnect_timeout=0.5)
    member.on_lost = lambda reason: lost.append(
        (reason, threading.current_thread() is threading.main_thread())
    )

    async def scenario() -> str:
        await member.start(lambda event: None)
        instance.unreachable = True  # from now on no new connection succeeds
        try:
            await asyncio.gather(*(member.submit(spec) for spec in BASIC.values()))
            async with asyncio.timeout(10):
                while not lost:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # no second call
            with pytest.raises(MemberError) as refused:
                await member.submit(BASIC["success"])
            return str(refused.value)
        finally:
            await member.close()

    with caplog.at_level(logging.WARNING):
        refused = asyncio.run(scenario())
    assert len(lost) == 1
    reason, on_loop = lost[0]
    assert on_loop
    assert reason.startswith("the Flux event stream broke and could not be resumed within")
    assert "No such file or directory" in reason
    assert refused.startswith("the Flux member lost its event stream: the Flux event stream")
    assert member.describe()["lost"] == reason


def test_start_fails_clearly_when_the_journal_never_answers(basic, monkeypatch):
    basic()

    def silent(self: flux_fake.JournalConsumer, timeout: float = -1.0) -> None:
        threading.Event().wait(max(timeout, 0))
        raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    monkeypatch.setattr(flux_fake.JournalConsumer, "poll", silent)
    member = FluxMember(reconnect_timeout=0.3)
    with pytest.raises(MemberError, match="did not answer within 0 s"):
        asyncio.run(member.start(lambda event: None))
