"""The Flux member on a real Flux instance: run with `flux` on PATH and flux-python importable.

A test instance of two brokers is started for the module (`flux start --test-size=2`) and stopped
after it, so the tests need no instance of their own and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, JobEvent, Outcome
from ensemble_core.members.flux import FluxMember, import_flux
from ensemble_core.spec import JobSpec

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]

_PRINT_URI = "import os, sys; print(os.environ['FLUX_URI'], flush=True); sys.stdin.read()"


@pytest.fixture(scope="module")
def flux_uri() -> Iterator[str]:
    """The URI of a fresh 2-broker instance that lives while its `flux start` reads stdin."""
    try:
        import_flux()
    except MemberError as error:
        pytest.skip(str(error))
    flux = shutil.which("flux")
    assert flux is not None
    command = [flux, "start", "--test-size=2", sys.executable, "-c", _PRINT_URI]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        uri = proc.stdout.readline().strip()
        if not uri:
            pytest.skip(f"`flux start --test-size=2` did not start (exit {proc.wait()})")
        try:
            yield uri
        finally:
            proc.stdin.close()
            proc.wait(60)


class Session:
    """A FluxMember on the instance and the events it emitted, per job."""

    def __init__(self, uri: str) -> None:
        self.member = FluxMember(flux_uri=uri)
        self.events: dict[int, list[JobEvent]] = defaultdict(list)

    def emit(self, event: JobEvent) -> None:
        self.events[event.jobid].append(event)

    def record(self, jobid: int) -> AttemptRecord:
        attempt = AttemptRecord()
        for event in self.events[jobid]:
            attempt.observe(event)
        return attempt

    async def until_clean(self, jobids: list[int]) -> None:
        async with asyncio.timeout(120):
            while not all(any(e.name == "clean" for e in self.events[j]) for j in jobids):
                await asyncio.sleep(0.05)


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
    assert session.member.log_paths(jobid) == [str(tmp_path / "out.txt")]
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
