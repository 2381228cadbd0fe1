"""200 trivial jobs through the Kubernetes member against a bare client loop, on a real API server.

Both run on one control plane (`$ENSEMBLE_K8S_CONTROL_PLANE start DIR`: kube-apiserver, etcd and
kube-controller-manager v1.28.7) whose Pods the simulated kubelet of tests/kubelet.py runs as local
processes. The bare loop is what a client of the official `kubernetes` package writes: it creates
the same 200 Jobs (the documents the member's translation makes) from a pool of threads as wide as
the one the member's submissions share (asyncio's default executor), and counts their Pods to
their end (Succeeded or Failed) on one watch. The member way submits the 200 JobSpecs through
`KubernetesMember` and stops the clock at the last `clean` event; the controller way goes through
`open_ensemble("kubernetes")` and waits for every handle. The ways take turns, each round starting
with the next one; after each, its Jobs are deleted and their Pods awaited gone, so each starts
from an empty namespace. Target: the member at 90% of the bare loop's jobs/s or better.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kubernetes import client, watch
from kubernetes_cluster import SKIP_REASON, Cluster, control_plane_script

from ensemble_core.api import open_ensemble
from ensemble_core.events import JobEvent
from ensemble_core.members.kubernetes import KubernetesMember
from ensemble_core.spec import JobSpec
from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL, to_kubernetes

JOBS = 200
ROUNDS = int(os.environ.get("ROUNDS", "3"))
NAMESPACE = "bench"
IMAGE = "python:3.12-slim"
SPEC = JobSpec(command=["true"], group="trivial")
#: asyncio's default executor, which the member's client calls share: min(32, cores + 4).
THREADS = min(32, (os.cpu_count() or 1) + 4)


def bare_loop(cluster: Cluster, ensemble_id: str) -> float:
    """Create the Jobs from THREADS threads; one Pod watch counts them to their end."""
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    selector = f"{ENSEMBLE_LABEL}={ensemble_id}"
    version = core.list_namespaced_pod(NAMESPACE, label_selector=selector).metadata.resource_version
    ended: set[str] = set()
    done = threading.Event()
    watcher = watch.Watch()

    def follow() -> None:
        for event in watcher.stream(
            core.list_namespaced_pod, NAMESPACE, label_selector=selector, resource_version=version
        ):
            pod = event["object"]
            if pod.status.phase in ("Succeeded", "Failed"):
                ended.add(pod.metadata.labels["job-name"])
                if len(ended) == JOBS:
                    done.set()
                    return

    documents = [
        to_kubernetes(
            SPEC, image=IMAGE, namespace=NAMESPACE, ensemble_id=ensemble_id,
            name=f"{ensemble_id}-{n}",
        ).document
        for n in range(1, JOBS + 1)
    ]  # fmt: skip
    started = time.perf_counter()
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda job: batch.create_namespaced_job(NAMESPACE, job), documents))
    assert done.wait(600), f"{len(ended)} of {JOBS} Pods ended"
    elapsed = time.perf_counter() - started
    watcher.stop()
    return elapsed


def member_way(cluster: Cluster, ensemble_id: str) -> float:
    """KubernetesMember alone: submit every JobSpec, until the last job's `clean`."""
    member = KubernetesMember(
        image=IMAGE, namespace=NAMESPACE, kubeconfig=cluster.kubeconfig, ensemble_id=ensemble_id
    )
    cleaned = 0
    finished = asyncio.Event()

    def emit(event: JobEvent) -> None:
        nonlocal cleaned
        if event.name == "clean":
            cleaned += 1
            if cleaned == JOBS:
                finished.set()

    async def main() -> float:
        await member.start(emit)
        try:
            started = time.perf_counter()
            await asyncio.gather(*(member.submit(SPEC) for _ in range(JOBS)))
            await asyncio.wait_for(finished.wait(), 600)
            return time.perf_counter() - started
        finally:
            await member.close()

    return asyncio.run(main())


def controller_way(cluster: Cluster, ensemble_id: str) -> float:
    """The controller on the member (`open_ensemble`): submit, wait for every handle."""
    settings = {
        "image": IMAGE,
        "namespace": NAMESPACE,
        "kubeconfig": cluster.kubeconfig,
        "ensemble_id": ensemble_id,
    }
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        started = time.perf_counter()
        handles = [ensemble.submit(SPEC) for _ in range(JOBS)]
        outcomes = {handle.wait(600) for handle in handles}
        elapsed = time.perf_counter() - started
    finally:
        ensemble.close()
    assert {str(outcome) for outcome in outcomes} == {"success"}, outcomes
    return elapsed


WAYS: dict[str, Callable[[Cluster, str], float]] = {
    "bare client loop": bare_loop,
    "KubernetesMember": member_way,
    'controller (open_ensemble("kubernetes"))': controller_way,
}


def clean_up(cluster: Cluster, ensemble_id: str) -> None:
    """Delete a way's Jobs and wait until their Pods are gone."""
    selector = f"{ENSEMBLE_LABEL}={ensemble_id}"
    cluster.delete_jobs(selector)
    deadline = time.monotonic() + 300
    while cluster.objects("pods", selector) or cluster.objects("jobs", selector):
        assert time.monotonic() < deadline, "the Jobs were not deleted in 300 s"
        time.sleep(0.5)


def main() -> dict[str, float]:
    if control_plane_script() is None:
        print(f"kubernetes member: skipped ({SKIP_REASON})")
        return {}
    names = list(WAYS)
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(Path(directory), NAMESPACE)
        try:
            cluster.start()
            for round_number in range(ROUNDS):
                order = names[round_number % len(names) :] + names[: round_number % len(names)]
                for way in order:
                    ensemble_id = f"b{round_number}-{names.index(way)}"
                    elapsed = WAYS[way](cluster, ensemble_id)
                    rates[way].append(JOBS / elapsed)
                    clean_up(cluster, ensemble_id)
        finally:
            cluster.stop()
    bare = statistics.median(rates[names[0]])
    print(
        f"kubernetes member: {JOBS} `true` jobs, {ROUNDS} rounds, {platform.node()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    for way in names:
        median = statistics.median(rates[way])
        each = ", ".join(f"{rate:.1f}" for rate in rates[way])
        print(
            f"  {way}: {median:.1f} jobs/s (rounds: {each}) = {median / bare:.0%} of the bare loop"
        )
    print("  target: KubernetesMember at 90% of the bare loop or better")
    return {way: statistics.median(rates[way]) for way in names}


if __name__ == "__main__":
    main()
