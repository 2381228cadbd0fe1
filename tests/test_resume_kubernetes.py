"""Resume on a real Kubernetes control plane (its Pods run by the simulated kubelet).

A second `KubernetesMember`, of another ensemble id, adopts the Jobs of a first one (closed,
which leaves its Jobs as a killed controller does); and `ensemble run --member kubernetes
--state DIR`, stopped while its jobs run and killed once some have ended, is run again: each job
created once, each outcome right, the reacting rule fired once in all. The module starts a
control plane of its own (about 5 s); without `ENSEMBLE_K8S_CONTROL_PLANE` it skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes_cluster import SKIP_REASON, Cluster, control_plane_script
from test_resume_flux import RUN, kill, wait_for

from ensemble_core.events import JobEvent, Outcome
from ensemble_core.jobs import Attempt
from ensemble_core.members.base import TOKEN_ATTRIBUTE
from ensemble_core.members.kubernetes import TOKEN_LABEL, KubernetesMember
from ensemble_core.spec import JobSpec
from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL, GROUP_LABEL

pytestmark = pytest.mark.skipif(control_plane_script() is None, reason=SKIP_REASON)

NAMESPACE = "ensemble"
IMAGE = "python:3.12-slim"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    plane = Cluster(tmp_path_factory.mktemp("control-plane"), NAMESPACE)
    try:
        yield plane.start()
    finally:
        plane.stop()


def settings(cluster: Cluster, ensemble_id: str, tmp_path: Path) -> dict:
    return {
        "image": IMAGE,
        "namespace": NAMESPACE,
        "kubeconfig": cluster.kubeconfig,
        "ensemble_id": ensemble_id,
        "log_dir": str(tmp_path / "logs"),
    }


class Emitted:
    """What a member emitted, per job, and the outcome that makes."""

    def __init__(self) -> None:
        self.events: dict[str, list[JobEvent]] = {}

    def emit(self, event: JobEvent) -> None:
        self.events.setdefault(event.jobid, []).append(event)

    def names(self, jobid: str) -> list[str]:
        return [event.name for event in self.events.get(jobid, [])]

    def outcome(self, jobid: str) -> Attempt:
        attempt = Attempt(JobSpec(command=["true"]))
        for event in self.events.get(jobid, []):
            attempt.record.observe(event)
        return attempt

    async def until(self, condition, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)

    def cleaned(self, *jobids: str) -> bool:
        return all("clean" in self.names(jobid) for jobid in jobids)


def tokened(token: str, *command: str) -> JobSpec:
    return JobSpec(command=list(command), group="adopt", attributes={TOKEN_ATTRIBUTE: token})


def test_a_member_of_another_ensemble_id_adopts_the_jobs_by_their_token(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Jobs that ended, run, and are still to end while no member followed them; one found by
    its token alone; a token never submitted and a name whose Job has another token are not
    the queue's. Nothing is emitted before `adopt` returns; each found job gets its outcome."""
    specs = {
        "k-true": tokened("k-true", "true"),
        "k-exit3": tokened("k-exit3", "sh", "-c", "echo bye >&2; exit 3"),
        "k-sleep": tokened("k-sleep", "sleep", "2"),
        "k-long": tokened("k-long", "sleep", "60"),
        "k-lost": tokened("k-lost", "sleep", "1"),
    }

    async def first() -> dict[str, str]:
        member, seen = KubernetesMember(**settings(cluster, "first", tmp_path)), Emitted()
        await member.start(seen.emit)
        try:
            names = [await member.submit(spec) for spec in specs.values()]
            ids = dict(zip(specs, names, strict=True))
            await seen.until(lambda: seen.cleaned(ids["k-true"], ids["k-exit3"]))
        finally:
            await member.close()  # leaves every Job as it is
        return ids

    async def second(ids: dict[str, str]) -> tuple[Emitted, dict, bool, dict]:
        member, seen = KubernetesMember(**settings(cluster, "second", tmp_path)), Emitted()
        await member.start(seen.emit)
        try:
            jobs = [(ids[t], t) for t in ("k-true", "k-exit3", "k-sleep", "k-long")]
            jobs += [(None, "k-lost"), (None, "k-never"), (ids["k-true"], "k-other")]
            found = await member.adopt(jobs)
            quiet = not seen.events
            await seen.until(lambda: "start" in seen.names(ids["k-long"]))
            await member.cancel(ids["k-long"])
            await seen.until(lambda: seen.cleaned(*ids.values()))
        finally:
            await member.close()
        return seen, found, quiet, member.describe()

    ids = asyncio.run(first())
    seen, found, quiet, described = asyncio.run(second(ids))
    try:
        assert found == ids and quiet
        outcomes = {token: seen.outcome(name).record.outcome for token, name in ids.items()}
        assert outcomes == {
            "k-true": Outcome.SUCCESS,
            "k-exit3": Outcome.FAILED,
            "k-sleep": Outcome.SUCCESS,
            "k-long": Outcome.CANCELLED,
            "k-lost": Outcome.SUCCESS,
        }
        assert seen.outcome(ids["k-exit3"]).record.exit_code == 3
        assert (tmp_path / "logs" / f"{ids['k-exit3']}.log").read_text() == "bye\n"
        for name in ids.values():
            names = seen.names(name)
            assert names[:2] == ["submit", "validate"] and names[-1] == "clean", names
            assert len(names) == len(set(names)), names
        assert described["selector"] == f"{ENSEMBLE_LABEL} in (second,first)"
        labels = [job.metadata.labels for job in cluster.objects("jobs", f"{GROUP_LABEL}=adopt")]
        left = sorted(label[TOKEN_LABEL] for label in labels)
        assert left == sorted(set(ids) - {"k-long"})  # closing deleted none; the cancel did
    finally:
        cluster.delete_jobs(f"{GROUP_LABEL}=adopt")


def ensemble_run(cluster: Cluster, cwd: Path) -> subprocess.Popen:
    command = [str(BIN / "ensemble"), "run", "run.yaml", "--json", "--state", "state"]
    command += ["--member", "kubernetes", "--image", IMAGE, "--namespace", NAMESPACE]
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def pods(cluster: Cluster, group: str) -> list:
    return cluster.objects("pods", f"{GROUP_LABEL}={group}")


def test_ensemble_run_killed_with_jobs_running_and_ended_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Stopped (SIGSTOP) with two `a` jobs running, killed once three have ended: the next run
    adopts what runs, learns the ends it missed from the Pods (with their times), and fires
    the rule once."""
    (tmp_path / "run.yaml").write_text(RUN.replace("sleep 0.5", "sleep 1"))
    first = ensemble_run(cluster, tmp_path)
    try:
        wait_for(lambda: len([p for p in pods(cluster, "a") if p.status.phase == "Running"]) >= 2)
        time.sleep(0.4)  # the controller sees them start and writes it down (every 0.2 s)
        first.send_signal(signal.SIGSTOP)
        wait_for(lambda: len([p for p in pods(cluster, "a") if p.status.phase == "Succeeded"]) >= 3)
        time.sleep(2)  # their ends are seen two seconds late at least
        kill(first)
        assert not cluster.objects("jobs", f"{GROUP_LABEL}=b")
        second = ensemble_run(cluster, tmp_path)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        report = json.loads(out)
        jobs = Counter(
            job.metadata.labels[GROUP_LABEL]
            for job in cluster.objects("jobs", f"{GROUP_LABEL} in (a,b,c)")
        )
        assert jobs == {"a": 6, "b": 1, "c": 1}
        phases = Counter((g, p.status.phase) for g in "abc" for p in pods(cluster, g))
        assert phases == {("a", "Succeeded"): 6, ("b", "Succeeded"): 1, ("c", "Failed"): 1}
        assert report["exit"] == "completed"
        counts = {
            g: (c["submitted"], c["success"], c["failed"]) for g, c in report["groups"].items()
        }
        assert counts == {"a": (6, 6, 0), "b": (1, 1, 0), "c": (1, 0, 1)}
        # Ends seen seconds late keep the Pods' times (to the second): `sleep 1` lasted < 2.5 s.
        duration = report["groups"]["a"]["duration"]
        assert 0 <= duration["min"] <= duration["max"] < 2.5, duration
    finally:
        if first.poll() is None:
            kill(first)
        cluster.delete_jobs(f"{GROUP_LABEL} in (a,b,c)")
