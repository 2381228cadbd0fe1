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
from flux_fake import Emitted
from kubernetes_cluster import SKIP_REASON, Cluster, control_plane_script
from resume_scenarios import (
    ADOPTED_OUTCOMES,
    COUNTS,
    RUN,
    adoption,
    counts,
    kill,
    tokened,
    until_started,
)
from test_kubernetes_cluster import IMAGE, NAMESPACE, member_settings

from ensemble_core.events import Outcome
from ensemble_core.members.kubernetes import TOKEN_LABEL, KubernetesMember
from ensemble_core.spec import JobSpec
from ensemble_core.testing.waiting import eventually
from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL, GROUP_LABEL

pytestmark = pytest.mark.skipif(control_plane_script() is None, reason=SKIP_REASON)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    plane = Cluster(tmp_path_factory.mktemp("control-plane"), NAMESPACE)
    try:
        yield plane.start()
    finally:
        plane.stop()


def adopting(token: str, *command: str) -> JobSpec:
    return tokened(token, *command, group="adopt")


async def started(cluster: Cluster, ensemble_id: str, tmp_path: Path) -> Emitted:
    """A started member and what it emits."""
    seen = Emitted(KubernetesMember(**member_settings(cluster, ensemble_id, tmp_path)))
    await seen.member.start(seen.emit)
    return seen


def test_a_member_of_another_ensemble_id_adopts_the_jobs_by_their_token(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Jobs that ended, run, and are still to end while no member followed them; one found by
    its token alone; a token never submitted and a name whose Job has another token are not
    the queue's. Nothing is emitted before `adopt` returns; each found job gets its outcome."""
    seen, ids, found, quiet = asyncio.run(
        adoption(lambda name: started(cluster, name, tmp_path), lambda token: {"group": "adopt"})
    )
    try:
        assert found == ids and quiet
        outcomes = {token: seen.record(name).outcome for token, name in ids.items()}
        assert outcomes == ADOPTED_OUTCOMES
        assert seen.record(ids["exit3"]).exit_code == 3
        assert seen.logs[ids["exit3"]] == [str(tmp_path / "logs" / f"{ids['exit3']}.log")]
        assert (tmp_path / "logs" / f"{ids['exit3']}.log").read_text() == "bye\n"
        for name in ids.values():
            events = [event.name for event in seen.events[name]]
            assert events[:2] == ["submit", "validate"] and events[-1] == "clean", events
            assert len(events) == len(set(events)), events
        assert seen.member.describe()["selector"] == f"{ENSEMBLE_LABEL} in (second,first)"
        labels = [job.metadata.labels for job in cluster.objects("jobs", f"{GROUP_LABEL}=adopt")]
        left = sorted(label[TOKEN_LABEL] for label in labels)
        assert left == sorted(set(ids) - {"long"})  # closing deleted none; the cancel did
    finally:
        cluster.delete_jobs(f"{GROUP_LABEL}=adopt")


def test_a_member_of_the_same_ensemble_id_names_its_jobs_past_those_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`ensemble_id` set, so the next controller's member has the same: its watches already see
    the adopted Job, and its new Jobs do not take the names of the run before."""

    async def first() -> str:
        seen = await started(cluster, "reused", tmp_path)
        try:
            name = await seen.member.submit(adopting("r-1", "sleep", "1"))
            await until_started(seen, name)
        finally:
            await seen.member.close()
        return name

    async def second() -> tuple[Emitted, dict, str]:
        seen = await started(cluster, "reused", tmp_path)
        try:
            found = await seen.member.adopt([(None, "r-1")])
            name = await seen.member.submit(adopting("r-2", "true"))
            await seen.until_clean([*found.values(), name])
        finally:
            await seen.member.close()
        return seen, found, name

    try:
        adopted = asyncio.run(first())
        seen, found, name = asyncio.run(second())
        assert (found, name) == ({"r-1": "reused-1"}, "reused-2") and adopted == "reused-1"
        assert seen.member.describe()["selector"] == f"{ENSEMBLE_LABEL}=reused"
        assert [seen.record(job).outcome for job in (adopted, name)] == [Outcome.SUCCESS] * 2
    finally:
        cluster.delete_jobs(f"{ENSEMBLE_LABEL}=reused")


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
        running = lambda: [p for p in pods(cluster, "a") if p.status.phase == "Running"]  # noqa: E731
        assert eventually(lambda: len(running()) >= 2, 30, every=0.01), "timed out"
        time.sleep(0.4)  # the controller sees them start and writes it down (every 0.2 s)
        first.send_signal(signal.SIGSTOP)
        ended = lambda: [p for p in pods(cluster, "a") if p.status.phase == "Succeeded"]  # noqa: E731
        assert eventually(lambda: len(ended()) >= 3, 30, every=0.01), "timed out"
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
        assert counts(report) == COUNTS
        # Ends seen seconds late keep the Pods' times (to the second): `sleep 1` lasted < 2.5 s.
        duration = report["groups"]["a"]["duration"]
        assert 0 <= duration["min"] <= duration["max"] < 2.5, duration
    finally:
        if first.poll() is None:
            kill(first)
        cluster.delete_jobs(f"{GROUP_LABEL} in (a,b,c)")
