"""The Flux member on a real Flux instance: run with `flux` on PATH and flux-python importable.

A test instance of two brokers is started for the module (`flux start --test-size=2`) and stopped
after it; the tests that kill a broker or need cgroups start their own. Nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import flux_fake
import flux_oom_bridge
import pytest

from ensemble_core.errors import MemberError
from ensemble_core.events import Outcome
from ensemble_core.members.flux import FluxMember, import_flux
from ensemble_core.spec import JobSpec

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]

_PRINT_URIS = (
    "import os, sys; print(os.environ['FLUX_URI'], os.environ['FLUX_START_URI'], flush=True); "
    "sys.stdin.read()"
)


@dataclass
class Instance:
    uri: str  # the instance (rank 0)
    start_uri: str  # `flux start` itself: start.kill and friends


@contextlib.contextmanager
def flux_instance(
    *options: str, wrap: Callable[[list[str]], list[str]] | None = None
) -> Iterator[Instance]:
    """A fresh instance that lives while its `flux start` reads stdin; stopped on exit."""
    try:
        import_flux()
    except MemberError as error:
        pytest.skip(str(error))
    flux = shutil.which("flux")
    assert flux is not None
    command = [flux, "start", *options, sys.executable, "-c", _PRINT_URIS]
    with subprocess.Popen(
        wrap(command) if wrap else command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        uris = proc.stdout.readline().split()
        if len(uris) != 2:
            pytest.skip(f"`flux start {' '.join(options)}` did not start (exit {proc.wait()})")
        try:
            yield Instance(*uris)
        finally:
            proc.stdin.close()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def flux_uri() -> Iterator[str]:
    """The URI of a 2-broker instance shared by the module's tests."""
    with flux_instance("--test-size=2") as instance:
        yield instance.uri


class Session(flux_fake.Emitted):
    """A FluxMember on a real instance and the events it emitted, per job."""

    def __init__(self, uri: str, **settings: float) -> None:
        super().__init__(FluxMember(flux_uri=uri, **settings))


def run_and_cancel(uri: str, specs: list[JobSpec], cancel: int) -> tuple[Session, list[int]]:
    """Submit `specs` to a fresh member, cancel `specs[cancel]` once it runs, wait for all."""

    async def scenario() -> tuple[Session, list[int]]:
        session = Session(uri)
        await session.member.start(session.emit)
        try:
            ids = list(await asyncio.gather(*(session.member.submit(s) for s in specs)))
            async with asyncio.timeout(60):
                while not any(e.name == "start" for e in session.events[ids[cancel]]):
                    await asyncio.sleep(0.05)
            await session.member.cancel(ids[cancel])
            await session.until_clean(ids)
        finally:
            await session.member.close()
        return session, ids

    return asyncio.run(scenario())


def test_outcomes_of_real_jobs(flux_uri: str) -> None:
    specs = [
        JobSpec(command=["true"]),
        JobSpec(command=["false"]),
        JobSpec(command=["sh", "-c", "exit 3"]),
        JobSpec(command=["sleep", "30"], walltime=1),
        JobSpec(command=["sleep", "30"]),
        JobSpec(command=["hostname"], nodes=2, tasks=2),
        JobSpec(command=["true"], nodes=8, tasks=8),
    ]
    session, ids = run_and_cancel(flux_uri, specs, cancel=4)
    outcomes = [session.record(jobid).outcome for jobid in ids]
    assert outcomes == [
        Outcome.SUCCESS,
        Outcome.FAILED,
        Outcome.FAILED,
        Outcome.TIMEOUT,
        Outcome.CANCELLED,
        Outcome.SUCCESS,
        Outcome.UNSATISFIABLE,
    ]
    assert [session.record(jobid).exit_code for jobid in ids[:3]] == [0, 1, 3]
    assert "cancelled by the ensemble" in session.record(ids[4]).reason
    names = [event.name for event in session.events[ids[0]]]
    assert names[0] == "submit" and names[-1] == "clean" and "start" in names


def test_output_path_and_environment_reach_the_job(flux_uri: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[Session, int]:
        session = Session(flux_uri)
        await session.member.start(session.emit)
        try:
            spec = JobSpec(
                command=["sh", "-c", 'echo "$ENSEMBLE_GREETING from $(pwd)"'],
                environment={"ENSEMBLE_GREETING": "hello"},
                cwd=str(tmp_path),
                stdout="out.txt",
            )
            jobid = await session.member.submit(spec)
            await session.until_clean([jobid])
        finally:
            await session.member.close()
        return session, jobid

    session, jobid = asyncio.run(scenario())
    assert session.record(jobid).outcome is Outcome.SUCCESS
    assert session.logs[jobid] == [str(tmp_path / "out.txt")]
    assert (tmp_path / "out.txt").read_text().strip() == f"hello from {tmp_path}"


def test_shrink_then_grow_drains_and_undrains_rank_1(flux_uri: str) -> None:
    async def scenario() -> list[str]:
        member = FluxMember(flux_uri=flux_uri)
        await member.start(lambda event: None)
        try:
            said = [await member.shrink(1)]
            said.append(member.describe()["drained_by_member"])
            said.append(await member.shrink(1))
            said.append(await member.grow(2))
            said.append(await member.grow(1))
        finally:
            await member.close()
        return said

    said = asyncio.run(scenario())
    assert said[0].startswith("flux member drained ranks 1")
    assert said[1] == "1"
    assert said[2].startswith("flux member cannot shrink")
    assert said[3].startswith("flux member undrained ranks 1")
    assert said[4].startswith("flux member cannot grow")


def test_describe_names_the_flux_version(flux_uri: str) -> None:
    async def scenario() -> dict:
        member = FluxMember(flux_uri=flux_uri)
        await member.start(lambda event: None)
        await member.close()
        return member.describe()

    info = asyncio.run(scenario())
    assert info["uri"] == flux_uri
    assert info["events"] == "job journal"
    assert info["flux_version"][0].isdigit()
    assert int(info["size"]) == 2


def test_no_instance_at_uri_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import_flux()
    except MemberError as error:
        pytest.skip(str(error))
    member = FluxMember(flux_uri=f"local://{tmp_path}/nothing")
    with pytest.raises(MemberError, match="cannot connect to a Flux instance at local://"):
        asyncio.run(member.start(lambda event: None))


def test_controller_on_the_flux_member(flux_uri: str) -> None:
    from ensemble_core.api import open_ensemble

    ensemble = open_ensemble("flux", member_settings={"flux_uri": flux_uri})
    try:
        handles = [
            ensemble.submit(JobSpec(command=["true"], group="ok")),
            ensemble.submit(JobSpec(command=["false"], group="bad")),
            ensemble.submit(JobSpec(command=["sleep", "30"], walltime=1, group="slow")),
        ]
        outcomes = [handle.wait(120) for handle in handles]
    finally:
        ensemble.close()
    assert outcomes == [Outcome.SUCCESS, Outcome.FAILED, Outcome.TIMEOUT]
    assert handles[1].exit_code == 1


def test_guest_fallback_follows_each_job_on_a_real_instance(
    flux_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal refused as a system instance refuses a guest; the eventlog watches are real."""
    import flux.job

    class Refused(flux.job.JournalConsumer):
        def poll(self, timeout: float = -1.0) -> None:
            raise PermissionError(errno.EPERM, "Request requires owner credentials")

    monkeypatch.setattr(flux.job, "JournalConsumer", Refused)

    specs = [
        JobSpec(command=["true"]),
        JobSpec(command=["sh", "-c", "exit 3"]),
        JobSpec(command=["sleep", "30"], walltime=1),
        JobSpec(command=["sleep", "30"]),
    ]
    with caplog.at_level("WARNING"):
        session, ids = run_and_cancel(flux_uri, specs, cancel=3)
    outcomes = [session.record(jobid).outcome for jobid in ids]
    assert outcomes == [Outcome.SUCCESS, Outcome.FAILED, Outcome.TIMEOUT, Outcome.CANCELLED]
    assert session.record(ids[1]).exit_code == 3
    assert session.member.describe()["events"] == "per-job eventlog watch"
    assert sum("journal is refused" in r.getMessage() for r in caplog.records) == 1
    for jobid in ids:
        keys = [(e.name, e.timestamp) for e in session.events[jobid]]
        assert len(keys) == len(set(keys))


EXAMPLES = Path(__file__).parent.parent / "examples" / "ensembles"
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("name", ["hello-world.yaml", "retry-timeout.yaml"])
def test_ensemble_run_on_flux_keeps_the_examples_promise(
    flux_uri: str, tmp_path: Path, name: str
) -> None:
    path = EXAMPLES / name
    match = re.search(r"^# expect: (\{.*\})$", path.read_text(), re.MULTILINE)
    assert match, f"{name} has no '# expect:' comment"
    expected = json.loads(match.group(1))
    command = [str(BIN / "ensemble"), "run", str(path), "--member", "flux", "--json"]
    command += ["--flux-uri", flux_uri]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["exit"] == expected["exit"]
    for group, counts in expected["groups"].items():
        for key, value in counts.items():
            assert report["groups"][group].get(key, 0) == value, (group, key, report["groups"])


def test_snakemake_on_flux(flux_uri: str, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(
        "rule all:\n"
        "    input: 'b.txt'\n"
        "rule a:\n"
        "    output: 'a.txt'\n"
        "    shell: 'echo a > {output}'\n"
        "rule b:\n"
        "    input: 'a.txt'\n"
        "    output: 'b.txt'\n"
        "    shell: 'cat {input} > {output} && echo b >> {output}'\n"
    )
    command = [str(BIN / "snakemake"), "--executor", "ensemble", "--jobs", "2"]
    command += ["--ensemble-member", "flux", "--ensemble-flux-uri", flux_uri]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "b.txt").read_text() == "a\nb\n"


def test_parsl_on_flux(flux_uri: str, tmp_path: Path) -> None:
    parsl = pytest.importorskip("parsl")
    from parsl.app.errors import BashExitFailure
    from parsl.config import Config

    from parsl_ensemble import EnsembleExecutor

    executor = EnsembleExecutor(
        label="flux",
        member="flux",
        member_settings={"flux_uri": flux_uri},
        working_dir=str(tmp_path / "work"),
    )
    dfk = parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo")))
    try:

        @parsl.python_app
        def square(x: int) -> int:
            return x * x

        @parsl.bash_app
        def exit_three() -> str:
            return "exit 3"

        squares = [square(i) for i in range(4)]
        failing = exit_three()
        assert [future.result(timeout=300) for future in squares] == [0, 1, 4, 9]
        with pytest.raises(BashExitFailure) as caught:
            failing.result(timeout=300)
        assert caught.value.exitcode == 3
    finally:
        dfk.cleanup()
        parsl.clear()


# Start-up, reconnect and loss of the event stream --------------------------------------------


def test_a_job_that_ends_before_the_journal_request_arrives_is_reported(
    flux_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event thread sends its journal request a second late, as on a loaded machine. A live
    journal (`full=False`) never reports a job that was over before the request arrived, so
    `start` must not return before it is in place; this `true` job ends within milliseconds."""
    import flux.job

    send = flux.job.JournalConsumer.start

    def late(self: flux.job.JournalConsumer) -> flux.job.JournalConsumer:
        time.sleep(1.0)
        return send(self)

    monkeypatch.setattr(flux.job.JournalConsumer, "start", late)

    async def scenario() -> tuple[Session, int]:
        session = Session(flux_uri)
        await session.member.start(session.emit)
        try:
            jobid = await session.member.submit(JobSpec(command=["true"]))
            await session.until_clean([jobid], timeout=20)
        finally:
            await session.member.close()
        return session, jobid

    session, jobid = asyncio.run(scenario())
    assert session.record(jobid).outcome is Outcome.SUCCESS


class Relay:
    """A Unix-socket relay in front of a broker's socket: handles opened on `uri` go through it
    (Flux's local connector is a byte stream), `cut(n)` drops its n-th connection as a broken
    link would, `refuse()` makes the address disappear, as when an instance is gone."""

    def __init__(self, broker_uri: str, directory: Path) -> None:
        self.broker = broker_uri.removeprefix("local://")
        self.path = directory / "relay.sock"
        self.uri = f"local://{self.path}"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.broker)
            self.pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self, index: int) -> None:
        for end in self.pairs[index]:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def refuse(self) -> None:
        self.server.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.refuse()
        for index in range(len(self.pairs)):
            self.cut(index)


#: The member opens its command handle first, then the event stream's.
STREAM_CONNECTION = 1


def eventlog(uri: str, jobid: int) -> list[tuple[str, float]]:
    """A job's eventlog as Flux keeps it, read afresh: (name, timestamp) per entry."""
    import flux

    lookup = {"id": jobid, "keys": ["eventlog"], "flags": 0}
    text = flux.Flux(uri).rpc("job-info.lookup", lookup).get()["eventlog"]
    return [(e["name"], e["timestamp"]) for e in map(json.loads, text.splitlines())]


def test_a_broken_stream_resumes_with_no_event_lost_or_doubled(
    flux_uri: str, tmp_path: Path
) -> None:
    """Jobs run while the stream's connection is cut; some start and end while it is down."""
    relay = Relay(flux_uri, tmp_path)

    async def scenario() -> tuple[Session, list[int]]:
        session = Session(relay.uri, reconnect_delay=0.5)
        await session.member.start(session.emit)
        try:
            sleepers = [JobSpec(command=["sleep", "1"]) for _ in range(3)]
            before = await asyncio.gather(*(session.member.submit(s) for s in sleepers))
            async with asyncio.timeout(30):
                while not all(any(e.name == "start" for e in session.events[j]) for j in before):
                    await asyncio.sleep(0.02)
            relay.cut(STREAM_CONNECTION)
            quick = [JobSpec(command=["true"]), JobSpec(command=["sh", "-c", "exit 3"])] * 2
            during = await asyncio.gather(*(session.member.submit(s) for s in quick))
            ids = [*before, *during]
            await session.until_clean(ids)
        finally:
            await session.member.close()
            relay.close()
        return session, ids

    session, ids = asyncio.run(scenario())
    assert session.member.describe()["reconnects"] >= 1
    for jobid in ids:
        keys = [(e.name, e.timestamp) for e in session.events[jobid]]
        assert len(keys) == len(set(keys)), jobid
        assert [k for k in keys if k[0] != "annotations"] == eventlog(flux_uri, jobid)
    outcomes = [session.record(jobid).outcome for jobid in ids]
    assert outcomes == [Outcome.SUCCESS] * 3 + [Outcome.SUCCESS, Outcome.FAILED] * 2
    assert session.member.held == dict.fromkeys(session.member.held, 0)


def test_an_instance_that_does_not_come_back_ends_in_on_lost(flux_uri: str, tmp_path: Path) -> None:
    """The stream's link drops and the address is gone: after `reconnect_timeout` the member
    calls `on_lost` once (the controller then ends the ensemble); commands still work."""
    relay = Relay(flux_uri, tmp_path)
    lost: list[str] = []

    async def scenario() -> tuple[int, str, float]:
        session = Session(relay.uri, reconnect_delay=0.2, reconnect_timeout=2.0)
        session.member.on_lost = lost.append
        await session.member.start(session.emit)
        try:
            jobid = await session.member.submit(JobSpec(command=["sleep", "30"]))
            async with asyncio.timeout(30):
                while not any(e.name == "start" for e in session.events[jobid]):
                    await asyncio.sleep(0.02)
            relay.refuse()
            relay.cut(STREAM_CONNECTION)
            broke = time.monotonic()
            async with asyncio.timeout(30):
                while not lost:
                    await asyncio.sleep(0.05)
            waited = time.monotonic() - broke
            with pytest.raises(MemberError) as refused:
                await session.member.submit(JobSpec(command=["true"]))
            await session.member.cancel(jobid)  # the command handle's link still stands
        finally:
            await session.member.close()
            relay.close()
        return jobid, str(refused.value), waited

    jobid, refused, waited = asyncio.run(scenario())
    assert len(lost) == 1
    assert lost[0].startswith("the Flux event stream broke and could not be resumed within 2 s")
    assert waited < 15  # bounded: the setting, plus a last reconnect attempt
    assert refused.startswith("the Flux member lost its event stream")
    assert ("cancel", "cancelled by the ensemble") in {
        (name, note) for name, note in _exceptions(flux_uri, jobid)
    }


def _exceptions(uri: str, jobid: int) -> list[tuple[str, str]]:
    """(type, note) of a job's exceptions, from its eventlog once it is inactive."""
    import flux
    import flux.job

    flux.job.event_wait(flux.Flux(uri), jobid, "clean", raiseJobException=False)
    lookup = {"id": jobid, "keys": ["eventlog"], "flags": 0}
    text = flux.Flux(uri).rpc("job-info.lookup", lookup).get()["eventlog"]
    entries = [json.loads(line) for line in text.splitlines()]
    return [
        (e["context"]["type"], e["context"].get("note", ""))
        for e in entries
        if e["name"] == "exception"
    ]


# Outcomes only a real instance shows: a lost node, memory over the limit ---------------------


def test_a_lost_node_fails_the_job_that_needs_it_as_node_failure() -> None:
    """Broker rank 1 killed under two 2-node jobs (flux-core's own test does the same): the job
    that needs every rank ends `node-failure`; the one whose only critical rank is 0 runs on."""
    with flux_instance("--test-size=2", "--test-exit-mode=leader") as instance:
        import flux
        import flux.job

        async def scenario() -> tuple[Session, list[int]]:
            session = Session(instance.uri)
            await session.member.start(session.emit)
            try:
                specs = [
                    JobSpec(command=["sleep", "300"], nodes=2, tasks=2),
                    JobSpec(command=["sleep", "3"], nodes=2, tasks=2),
                ]
                ids = list(await asyncio.gather(*(session.member.submit(s) for s in specs)))
                handle = flux.Flux(instance.uri)
                for jobid in ids:  # every shell is past its start barrier
                    await asyncio.to_thread(
                        flux.job.event_wait,
                        handle,
                        jobid,
                        "shell.start",
                        eventlog="guest.exec.eventlog",
                    )
                handle.rpc("job-exec.critical-ranks", {"id": ids[1], "ranks": "0"}).get()
                flux.Flux(instance.start_uri).rpc("start.kill", {"rank": 1, "signum": 9}).get()
                await session.until_clean(ids)
            finally:
                await session.member.close()
            return session, ids

        session, ids = asyncio.run(scenario())
    critical, noncritical = (session.record(jobid) for jobid in ids)
    assert critical.outcome is Outcome.NODE_FAILURE
    assert re.fullmatch(r"node-failure: node failure on \S+ \(rank 1\)", critical.reason)
    assert noncritical.outcome is Outcome.SUCCESS
    notes = [e.context for e in session.events[ids[1]] if e.name == "exception"]
    assert [(n["type"], n["severity"]) for n in notes] == [("node-failure", 2)]


@pytest.fixture
def oom_bridge() -> Iterator[flux_oom_bridge.Bridge]:
    if reason := flux_oom_bridge.unavailable():
        pytest.skip(f"no memory limit the Flux oom plugin can see: {reason}")
    bridge = flux_oom_bridge.Bridge(f"ensemble-oom-test-{os.getpid()}", 64 << 20)
    try:
        yield bridge
    finally:
        bridge.remove()


def test_a_job_over_its_memory_limit_is_an_oom(
    oom_bridge: flux_oom_bridge.Bridge, tmp_path: Path
) -> None:
    """A real 64 MiB limit; the job shell's own oom plugin reports the kill (tests/
    flux_oom_bridge.py). Its report is in the KVS, or in the stderr file; a job that kills
    itself with SIGKILL has the same exit code, 137, and stays `failed`."""
    hog = oom_bridge.job_command(f"{shlex.quote(sys.executable)} -c 'x = bytearray(256 << 20)'")
    specs = [
        JobSpec(command=hog),
        JobSpec(command=hog, stdout=str(tmp_path / "hog.out"), stderr=str(tmp_path / "hog.err")),
        JobSpec(command=["sh", "-c", "kill -9 $$"]),
    ]
    with flux_instance("--test-size=1", wrap=oom_bridge.wrap) as instance:

        async def scenario() -> tuple[Session, list[int]]:
            session = Session(instance.uri)
            await session.member.start(session.emit)
            ids = []
            try:
                for spec in specs:  # one at a time: the jobs share the instance's cgroup
                    ids.append(await session.member.submit(spec))
                    await session.until_clean(ids[-1:])
            finally:
                await session.member.close()
            return session, ids

        session, ids = asyncio.run(scenario())
    records = [session.record(jobid) for jobid in ids]
    assert [r.outcome for r in records] == [Outcome.OOM, Outcome.OOM, Outcome.FAILED]
    for record in records[:2]:
        assert re.fullmatch(
            r"oom: Memory cgroup out of memory: killed 1 task on \S+\. memory\.peak = \d+M",
            record.reason,
        ), record.reason
    assert records[2].exit_code == 137
    assert "ERROR: oom: Memory cgroup out of memory" in (tmp_path / "hog.err").read_text()


def test_retry_oom_resubmits_a_flux_job_killed_for_memory(
    oom_bridge: flux_oom_bridge.Bridge, tmp_path: Path
) -> None:
    """The shared `retry-oom` rules on Flux: the first attempt goes over the limit, the rule
    resubmits it with twice the memory, the second attempt (which here needs less) succeeds."""
    from ensemble_core.api import open_ensemble

    marker = tmp_path / "first-attempt-done"
    hog = f"{shlex.quote(sys.executable)} -c 'x = bytearray(256 << 20)'"
    program = f"if [ -e {marker} ]; then exit 0; fi; touch {marker}; exec {hog}"
    with flux_instance("--test-size=1", wrap=oom_bridge.wrap) as instance:
        ensemble = open_ensemble("flux", "retry-oom", {"flux_uri": instance.uri})
        try:
            handle = ensemble.submit(
                JobSpec(
                    command=oom_bridge.job_command(f"sh -c {shlex.quote(program)}"), memory_mb=32
                )
            )
            outcome = handle.wait(120)
        finally:
            ensemble.close()
    assert outcome is Outcome.SUCCESS
    assert [a.spec.memory_mb for a in handle.attempts] == [32, 64]
    assert handle.attempts[0].record.outcome is Outcome.OOM
