"""Record the watch streams of tests/fixtures/kubernetes from a real API server.

    export ENSEMBLE_K8S_CONTROL_PLANE=../shared/k8s/control-plane
    .venv/bin/python tests/record_kubernetes.py

starts a control plane with the simulated kubelet (tests/kubelet.py) in a temporary directory,
and for each scenario creates the Job `ens-test-1` the Kubernetes member would create (label
ensemble `ens-test`, namespace `default`), watches its Pods and its Jobs through that label from
the resourceVersion of a list made just before, and writes every line the API server sent, as
sent, to `<scenario>.pods.jsonl` and `<scenario>.jobs.jsonl`. Watches last 4 s and are resumed
from the last resourceVersion (so BOOKMARK events appear, as the API server sends one 2 s before a
watch's end), until the scenario is over. `expired.json` is the ERROR event of a watch resumed
from a compacted resourceVersion, on a second control plane that compacts every 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes_cluster import COMPACTING, Cluster, control_plane_script

from ensemble_core.members.kubernetes_watch import list_objects, stream_lines
from ensemble_core.spec import JobSpec
from ensemble_core.testing.waiting import eventually
from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL, to_kubernetes

NAMESPACE = "default"
NAME = "ens-test-1"
SELECTOR = f"{ENSEMBLE_LABEL}=ens-test"
HERE = Path(__file__).parent / "fixtures" / "kubernetes"

#: scenario: (the job, what makes it a Job-level deadline, whether the recorder cancels it)
SCENARIOS: dict[str, tuple[JobSpec, int | None, bool]] = {
    "success": (JobSpec(command=["sleep", "3"], group="sim", memory_mb=64), None, False),
    "failed": (JobSpec(command=["sh", "-c", "exit 3"], group="sim", memory_mb=64), None, False),
    "oom": (
        JobSpec(command=["python3", "-c", "b = bytearray(256 * 2**20)"], group="sim", memory_mb=64),
        None,
        False,
    ),
    "timeout": (JobSpec(command=["sleep", "30"], group="sim", walltime=2), None, False),
    "deadline-job": (JobSpec(command=["sleep", "30"], group="sim"), 2, False),
    "cancel": (JobSpec(command=["sleep", "30"], group="sim"), None, True),
}


class Recorder:
    """Every line of the watches of one kind, resumed until stopped, from a list's version."""

    def __init__(self, list_call: Callable[..., Any]) -> None:
        self.list_call = list_call
        self.lines: list[str] = []
        _, self.version = list_objects(list_call, NAMESPACE, SELECTOR)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        while not self._stopped.is_set():
            response = self.list_call(
                NAMESPACE,
                label_selector=SELECTOR,
                watch=True,
                resource_version=self.version,
                allow_watch_bookmarks=True,
                timeout_seconds=4,
                _preload_content=False,
            )
            for line in stream_lines(response):
                self.lines.append(line.decode())
                self.version = json.loads(line)["object"]["metadata"]["resourceVersion"]

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line)["object"] for line in self.lines]

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)


def record(cluster: Cluster, scenario: str, out: Path) -> None:
    spec, job_deadline, cancel = SCENARIOS[scenario]
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    job = to_kubernetes(
        spec, image="busybox:1.36", namespace=NAMESPACE, ensemble_id="ens-test", name=NAME
    ).document
    if job_deadline is not None:
        job["spec"]["activeDeadlineSeconds"] = job_deadline
    pods, jobs = Recorder(core.list_namespaced_pod), Recorder(batch.list_namespaced_job)
    batch.create_namespaced_job(NAMESPACE, job)
    split = None
    if cancel:
        until(
            lambda: any((p.get("status") or {}).get("phase") == "Running" for p in pods.objects())
        )
        batch.delete_namespaced_job(NAME, NAMESPACE, propagation_policy="Background")
        split = (len(pods.lines), len(jobs.lines))
        until(lambda: deleted(pods) and deleted(jobs))
    else:
        until(lambda: settled(pods) and finished(jobs))
        time.sleep(1)  # what follows the end (the last finalizer removed) comes now
    pods.stop()
    jobs.stop()
    if split is None:
        write(out / f"{scenario}.pods.jsonl", pods.lines)
        write(out / f"{scenario}.jobs.jsonl", jobs.lines)
    else:
        write(out / f"{scenario}-running.pods.jsonl", pods.lines[: split[0]])
        write(out / f"{scenario}-deleted.pods.jsonl", pods.lines[split[0] :])
        write(out / f"{scenario}-running.jobs.jsonl", jobs.lines[: split[1]])
        write(out / f"{scenario}-deleted.jobs.jsonl", jobs.lines[split[1] :])
        return
    batch.delete_namespaced_job(NAME, NAMESPACE, propagation_policy="Background")
    until(lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items)


def settled(recorder: Recorder) -> bool:
    """The Pod ended and the Job controller has let go of it (its finalizer removed), or it is
    gone (the Job controller deletes a Pod at a Job-level deadline)."""
    objects = recorder.objects()
    last = objects[-1] if objects else {}
    ended = (last.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    return deleted(recorder) or (ended and not last["metadata"].get("finalizers"))


def finished(recorder: Recorder) -> bool:
    for obj in recorder.objects():
        conditions = (obj.get("status") or {}).get("conditions") or ()
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            return True
    return False


def deleted(recorder: Recorder) -> bool:
    return any(json.loads(line)["type"] == "DELETED" for line in recorder.lines)


def until(condition: Callable[[], bool], timeout: float = 60) -> None:
    if not eventually(condition, timeout, every=0.1):
        raise RuntimeError("the scenario did not come to its end in time")


def record_expired(cluster: Cluster, out: Path) -> None:
    """Resume a watch from a version older than the last compaction: the ERROR event."""
    core = client.CoreV1Api(cluster.api)
    _, old = list_objects(core.list_namespaced_pod, NAMESPACE, SELECTOR)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        core.create_namespaced_config_map(NAMESPACE, {"metadata": {"generateName": "tick-"}})
        response = core.list_namespaced_pod(
            NAMESPACE,
            label_selector=SELECTOR,
            watch=True,
            resource_version=old,
            timeout_seconds=1,
            _preload_content=False,
        )
        lines = [line.decode() for line in stream_lines(response)]
        errors = [line for line in lines if json.loads(line)["type"] == "ERROR"]
        if errors:
            write(out / "expired.json", errors[:1])
            return
        time.sleep(2)
    raise RuntimeError("no 410 Gone within 60 s")


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))
    print(f"{path}: {len(lines)} lines", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help=f"default: {HERE}")
    parser.add_argument("scenarios", nargs="*", default=[*SCENARIOS, "expired"])
    args = parser.parse_args()
    if control_plane_script() is None:
        print("record_kubernetes: set ENSEMBLE_K8S_CONTROL_PLANE", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(Path(directory) / "plane", NAMESPACE)
        try:
            cluster.start()
            for scenario in args.scenarios:
                if scenario != "expired":
                    record(cluster, scenario, args.out)
        finally:
            cluster.stop()
        if "expired" in args.scenarios:
            compacting = Cluster(Path(directory) / "compacting", NAMESPACE, COMPACTING)
            try:
                compacting.start()
                record_expired(compacting, args.out)
            finally:
                compacting.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
