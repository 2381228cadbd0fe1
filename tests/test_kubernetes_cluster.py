"""The Kubernetes member end to end on a real API server, its Pods run by the simulated kubelet.

One control plane (etcd, kube-apiserver, kube-controller-manager v1.28.7: `$ENSEMBLE_K8S_CONTROL_
PLANE start DIR`) serves the whole session; tests/kubelet.py plays the node for the namespace
`ensemble` (the example's). Everything but the node is the real thing: admission, RBAC, the Job
controller, watches, resourceVersions, the `pods/log` proxy. A second control plane that forgets
old resourceVersions within seconds makes a real `410 Gone`. Without the variable every test
here skips, saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes_cluster import (
    COMPACTING,
    SKIP_REASON,
    Cluster,
    RefusingWebhook,
    control_plane_script,
)

from ensemble_core.api import open_ensemble
from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent, Outcome
from ensemble_core.members.kubernetes import KubernetesMember
from ensemble_core.spec import JobSpec
from ensemble_core.testing.waiting import eventually
from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL, GROUP_LABEL

pytestmark = pytest.mark.skipif(control_plane_script() is None, reason=SKIP_REASON)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NAMESPACE = "ensemble"
IMAGE = "python:3.12-slim"


@pytest.fixture(scope="session")
def planes(tmp_path_factory: pytest.TempPathFactory):
    """The session's control plane (namespace `ensemble`, a simulated kubelet) and, in the
    background, the 410 scenario on a second one (see RelistScenario)."""
    main = Cluster(tmp_path_factory.mktemp("control-plane"), NAMESPACE)
    relist = None
    try:
        main.start()
        second = Cluster(
            tmp_path_factory.mktemp("compacting"),
            NAMESPACE,
            apiserver_args=COMPACTING,
        )
        relist = RelistScenario(second, tmp_path_factory.mktemp("relist"))
        relist.start()
        yield main, relist
    finally:
        stopping = [relist.finish() if relist else None, main.begin_stop()]
        for process in stopping:
            if process is not None:
                process.wait()


@pytest.fixture(scope="session")
def cluster(planes: tuple[Cluster, RelistScenario]) -> Cluster:
    return planes[0]


@pytest.fixture
def ensemble_id(cluster: Cluster):
    """A fresh ensemble id; its Jobs are deleted after the test (a namespace full of old Jobs
    slows the Job controller down for the next tests)."""
    name = f"t{secrets.token_hex(4)}"
    yield name
    cluster.delete_jobs(f"{ENSEMBLE_LABEL}={name}")


def member_settings(cluster: Cluster, ensemble_id: str, tmp_path: Path) -> dict:
    """The member's settings for a test: this cluster, the kubelet's namespace, logs in tmp."""
    return {
        "image": IMAGE,
        "namespace": NAMESPACE,
        "kubeconfig": cluster.kubeconfig,
        "ensemble_id": ensemble_id,
        "log_dir": str(tmp_path / "logs"),
    }


@pytest.fixture
def settings(cluster: Cluster, ensemble_id: str, tmp_path: Path) -> dict:
    return member_settings(cluster, ensemble_id, tmp_path)


def needs_memory_limits(cluster: Cluster) -> None:
    if cluster.kubelet is None or cluster.kubelet.memory_limits != "cgroup":
        pytest.skip(
            "the simulated kubelet cannot create memory cgroups here "
            "(it needs a writable cgroup v1 memory controller: root)"
        )


def run_cli(*args: str, cwd: Path, kubeconfig: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run(
        [sys.executable, "-m", "ensemble_core.cli", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- the CLI and the example -------------------------------------------------------------------


def test_example_ensemble_oom_then_resubmit_succeeds(cluster: Cluster, tmp_path: Path) -> None:
    needs_memory_limits(cluster)
    example = REPO / "examples" / "kubernetes" / "ensemble.yaml"
    result = run_cli(str(example), "--json", cwd=tmp_path, kubeconfig=cluster.kubeconfig)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    cluster.delete_jobs(summary["member"]["selector"])
    hungry, echo = summary["groups"]["hungry"], summary["groups"]["echo"]
    assert (hungry["oom"], hungry["resubmitted"], hungry["success"]) == (1, 1, 1)
    assert (echo["success"], echo.get("failed", 0)) == (3, 0)
    assert summary["exit"] == "completed"
    assert [
        action["detail"] for action in summary["actions"] if action["action"] == "resubmit"
    ] == ["attempt 2: memory_mb 200"]


# -- outcomes through the controller -------------------------------------------------------------


def test_exit_code_failure_keeps_the_pod_log_read_through_the_api_server(settings: dict) -> None:
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        handle = ensemble.submit(
            JobSpec(command=["sh", "-c", "echo about to fail >&2; exit 3"], group="fail")
        )
        assert handle.wait(60) is Outcome.FAILED
    finally:
        ensemble.close()
    assert handle.exit_code == 3
    assert handle.reason == "failed with exit code 3"
    (path,) = handle.log_paths
    assert Path(path).read_text() == "about to fail\n"


def test_walltime_is_the_pods_deadline(settings: dict) -> None:
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        handle = ensemble.submit(JobSpec(command=["sleep", "60"], group="late", walltime=1))
        assert handle.wait(60) is Outcome.TIMEOUT
    finally:
        ensemble.close()
    assert handle.reason == (
        "timeout: DeadlineExceeded: Pod was active on the node longer than the specified deadline"
    )


def test_cancel_deletes_the_job_and_its_pod(cluster: Cluster, settings: dict) -> None:
    selector = f"{ENSEMBLE_LABEL}={settings['ensemble_id']}"
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        handle = ensemble.submit(JobSpec(command=["sleep", "60"], group="long"))
        assert eventually(
            lambda: [p for p in cluster.objects("pods", selector) if p.status.phase == "Running"],
            30,
            every=0.1,
        ), "a running Pod not reached in 30 s"
        ensemble.cancel(handle)
        assert handle.wait(30) is Outcome.CANCELLED
    finally:
        ensemble.close()
    assert handle.reason == "cancelled by the ensemble"
    assert eventually(
        lambda: not cluster.objects("jobs", selector) and not cluster.objects("pods", selector),
        30,
        every=0.1,
    ), "no Job and no Pod left not reached in 30 s"


def test_200_jobs_at_once_none_lost(cluster: Cluster, settings: dict) -> None:
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        handles = [
            ensemble.submit(JobSpec(command=["sh", "-c", f"exit {i % 2}"], group="many"))
            for i in range(200)
        ]
        outcomes = [handle.wait(180) for handle in handles]
    finally:
        ensemble.close()
    assert Counter(outcomes) == {Outcome.SUCCESS: 100, Outcome.FAILED: 100}
    assert [handle.exit_code for handle in handles] == [i % 2 for i in range(200)]
    jobs = cluster.objects("jobs", f"{ENSEMBLE_LABEL}={settings['ensemble_id']}")
    assert len(jobs) == 200
    assert {h.member_id for h in handles} == {job.metadata.name for job in jobs}


def test_close_ends_the_watches_at_once(settings: dict) -> None:
    """An idle watch blocks in a read; close must end it rather than wait for its next event
    (with kubernetes < 36 the client's Watch.stop() did not, and close waited up to 5 s per watch
    for its thread)."""
    member = KubernetesMember(**settings)
    threads: list[threading.Thread] = []

    async def main() -> None:
        await member.start(lambda event: None)
        await asyncio.sleep(0.5)
        threads.extend(member._threads)
        assert sorted(t.name for t in threads if t.is_alive()) == [
            "kubernetes-jobs",
            "kubernetes-pods",
        ]
        await member.close()

    asyncio.run(main())
    assert not any(thread.is_alive() for thread in threads)


def test_a_refused_create_or_delete_ends_that_job_only(
    cluster: Cluster, settings: dict, ensemble_id: str, tmp_path: Path
) -> None:
    """The API server answers 500 to one create and to one delete (an admission webhook makes
    it): that submit and that cancel fail with what the server said; every other job, and the
    job whose delete failed, goes on to its own end."""
    names = [f"{ensemble_id}-{n}" for n in range(1, 5)]
    refusals = {
        ("CREATE", names[1]): (500, "etcdserver: request timed out"),
        ("DELETE", names[3]): (500, "etcdserver: leader changed"),
    }
    commands = [["true"], ["true"], ["sleep", "60"], ["sleep", "2"]]
    member = KubernetesMember(**settings)
    events: list[JobEvent] = []
    failures: dict[str, str] = {}

    async def main() -> None:
        await member.start(events.append)
        try:
            for name, command in zip(names, commands, strict=True):
                try:
                    assert await member.submit(JobSpec(command=command, group="g")) == name
                except MemberError as error:
                    failures[f"submit {name}"] = str(error)
            await until(lambda: {(names[2], "start"), (names[3], "start")} <= seen(events))
            await member.cancel(names[2])
            try:
                await member.cancel(names[3])
            except MemberError as error:
                failures[f"cancel {names[3]}"] = str(error)
            await until(lambda: {(n, "clean") for n in (names[0], *names[2:])} <= seen(events))
        finally:
            await member.close()

    with RefusingWebhook(cluster, tmp_path, ensemble_id, refusals):
        asyncio.run(main())
    denied = f'admission webhook "{RefusingWebhook.NAME}" denied the request'
    assert failures == {
        f"submit {names[1]}": (
            f"cannot create Jobs in namespace 'ensemble': 500 {denied}: "
            "etcdserver: request timed out"
        ),
        f"cancel {names[3]}": (
            f"cannot delete the Job {names[3]} in namespace 'ensemble': 500 {denied}: "
            "etcdserver: leader changed"
        ),
    }
    assert names[1] not in {event.jobid for event in events}
    ends = {e.jobid: e.context for e in events if e.name in ("finish", "exception")}
    assert ends == {
        names[0]: {"status": 0},
        names[2]: {"type": "cancel", "severity": 0, "note": "cancelled by the ensemble"},
        names[3]: {"status": 0},
    }


def seen(events: list[JobEvent]) -> set[tuple[str, str]]:
    return {(event.jobid, event.name) for event in events}


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


# -- the front doors ---------------------------------------------------------------------------


def test_snakemake_workflow_on_kubernetes(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule all:
                input: expand("out/{i}.txt", i=range(3))

            rule square:
                output: "out/{i}.txt"
                shell: "echo $(( {wildcards.i} * {wildcards.i} )) > {output}"
            """
        )
    )
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "PATH": f"{BIN}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(BIN / "snakemake"), "--executor", "ensemble", "-j", "3",
         "--ensemble-member", "kubernetes", "--ensemble-image", IMAGE,
         "--ensemble-namespace", NAMESPACE],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [(tmp_path / "out" / f"{i}.txt").read_text() for i in range(3)] == ["0\n", "1\n", "4\n"]
    selector = f"{GROUP_LABEL}=square"  # the rule's name: no other test's group
    jobs = cluster.objects("jobs", selector)
    cluster.delete_jobs(selector)
    assert len(jobs) == 3
    assert all(job.spec.template.spec.containers[0].working_dir == str(tmp_path) for job in jobs)


def test_parsl_app_on_kubernetes(cluster: Cluster, ensemble_id: str, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import parsl
            from parsl import python_app
            from parsl.config import Config
            from parsl_ensemble import EnsembleExecutor

            @python_app
            def add(a, b):
                return a + b

            executor = EnsembleExecutor(
                member="kubernetes",
                member_settings={{"image": {IMAGE!r}, "namespace": {NAMESPACE!r},
                                  "kubeconfig": {cluster.kubeconfig!r},
                                  "ensemble_id": {ensemble_id!r}}},
            )
            with parsl.load(Config(executors=[executor], run_dir="runinfo")):
                print(sorted(add(i, 10).result() for i in range(3)))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[10, 11, 12]"
    assert len(cluster.objects("jobs", f"{ENSEMBLE_LABEL}={ensemble_id}")) == 3


# -- RBAC ----------------------------------------------------------------------------------------

ONE_JOB = """\
jobs:
  - {name: hello, command: echo hello}
rules:
  - trigger: start
    action: {name: submit, label: hello}
"""


def test_the_documented_rbac_is_enough(cluster: Cluster, tmp_path: Path) -> None:
    cluster.apply(REPO / "examples" / "kubernetes" / "rbac.yaml")
    kubeconfig = cluster.kubeconfig_for(cluster.token("ensemble"), tmp_path / "kubeconfig")
    (tmp_path / "one.yaml").write_text(ONE_JOB)
    result = run_cli(
        "one.yaml", "--json", "--member", "kubernetes", "--image", IMAGE,
        cwd=tmp_path, kubeconfig=kubeconfig,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["groups"]["hello"]["success"] == 1
    assert summary["member"]["namespace"] == NAMESPACE  # from the kubeconfig's context
    cluster.delete_jobs(summary["member"]["selector"])


def test_an_account_without_the_rights_gets_one_line(cluster: Cluster, tmp_path: Path) -> None:
    cluster.core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "nobody"}})
    kubeconfig = cluster.kubeconfig_for(cluster.token("nobody"), tmp_path / "kubeconfig")
    (tmp_path / "one.yaml").write_text(ONE_JOB)
    result = run_cli(
        "one.yaml", "--member", "kubernetes", "--image", IMAGE, cwd=tmp_path, kubeconfig=kubeconfig
    )
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "ensemble: forbidden to list and watch pods in namespace 'ensemble' (pods is forbidden: "
        'User "system:serviceaccount:ensemble:nobody" cannot list resource "pods" in API group '
        '"" in the namespace "ensemble"). give the account the Role and RoleBinding of '
        "docs/kubernetes.md (kubectl apply -n ensemble -f examples/kubernetes/rbac.yaml), or "
        "choose another namespace"
    ]


# -- MiniCluster grow and shrink -------------------------------------------------------------------


def test_grow_and_shrink_patch_a_minicluster_within_its_bounds(
    cluster: Cluster, settings: dict
) -> None:
    from kubernetes import client

    cluster.apply(REPO / "tests" / "fixtures" / "kubernetes" / "minicluster-crd.yaml")
    custom = client.CustomObjectsApi(cluster.api)
    where = ("flux-framework.org", "v1alpha2", NAMESPACE, "miniclusters")
    minicluster = {
        "apiVersion": "flux-framework.org/v1alpha2",
        "kind": "MiniCluster",
        "metadata": {"name": "flux-sample"},
        "spec": {"size": 2, "minSize": 1, "maxSize": 4, "containers": [{"image": IMAGE}]},
    }
    assert eventually(lambda: _created(custom, where, minicluster), 30, every=0.1), (
        "the CRD served not reached in 30 s"
    )
    said = []

    async def resize(member: KubernetesMember) -> None:
        await member.start(lambda event: None)
        try:
            said.append(await member.grow(1))
            sizes.append(custom.get_namespaced_custom_object(*where, "flux-sample")["spec"])
            said.append(await member.grow(5))
            said.append(await member.shrink(10))
            said.append(await member.shrink(1))
        finally:
            await member.close()

    sizes: list[dict] = []
    asyncio.run(resize(KubernetesMember(**settings, minicluster="flux-sample")))
    assert said == [
        "MiniCluster ensemble/flux-sample size 2 -> 3 (min 1, max 4)",
        "MiniCluster ensemble/flux-sample size 3 -> 4 (min 1, max 4)",
        "MiniCluster ensemble/flux-sample size 4 -> 1 (min 1, max 4)",
        "MiniCluster ensemble/flux-sample stays at size 1 (min 1, max 4)",
    ]
    assert sizes[0]["size"] == 3
    scale = custom.get_namespaced_custom_object_scale(*where, "flux-sample")
    assert scale["spec"]["replicas"] == 1


def _created(custom, where, body) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        custom.create_namespaced_custom_object(*where, body)
    except ApiException as error:
        if error.status == 404:  # the CRD is not served yet
            return False
        raise
    return True


# -- 410 Gone ------------------------------------------------------------------------------------

RELIST_COMMANDS = [["true"]] * 3 + [["sleep", "25"]] * 3
WATCH_LOG = "ensemble_core.members.kubernetes_watch"


class RelistScenario:
    """Jobs on a control plane that forgets old resourceVersions (no watch cache for Pods and
    Jobs, etcd compacted every 10 s), watched by a member that resumes its watches every 2 s.

    Three jobs end at once; three sleep 25 s, in which nothing the watches select changes, so
    the version they resume from is compacted away and both meet 410 Gone and list again before
    those jobs end. The scenario mostly waits, so it runs in a thread of its own from the start
    of the session while the other tests run; its test reads the result.
    """

    def __init__(self, cluster: Cluster, log_dir: Path) -> None:
        self.cluster = cluster
        self.log_dir = log_dir
        self.events: list[JobEvent] = []
        self.names: list[str] = []
        self.relisted: set[str] = set()
        self.error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relist-scenario", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self, timeout: float) -> None:
        """Wait for the scenario's end; raise what went wrong in it."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the 410 scenario did not end in {timeout} s"
        if self.error is not None:
            raise self.error

    def finish(self) -> subprocess.Popen | None:
        """End the scenario (at once if its test did not run) and begin to stop its cluster."""
        self._abort.set()
        self._thread.join(30)
        return self.cluster.begin_stop()

    def _run(self) -> None:
        logger = logging.getLogger(WATCH_LOG)
        handler = _Relists(self.relisted)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            self.cluster.start()
            asyncio.run(self._jobs())
        except BaseException as error:
            self.error = error
        finally:
            logger.removeHandler(handler)

    async def _jobs(self) -> None:
        member = KubernetesMember(
            image=IMAGE,
            namespace=NAMESPACE,
            kubeconfig=self.cluster.kubeconfig,
            log_dir=str(self.log_dir),
            watch_seconds=2,
        )
        await member.start(self.events.append)
        try:
            for command in RELIST_COMMANDS:
                self.names.append(await member.submit(JobSpec(command=command, group="g")))
            deadline = time.monotonic() + 120
            while sum(e.name == "clean" for e in self.events) < len(self.names):
                if self._abort.is_set():
                    return
                assert time.monotonic() < deadline, [e.name for e in self.events]
                await asyncio.sleep(0.2)
            await asyncio.sleep(1)  # anything more would come now
        finally:
            await member.close()


class _Relists(logging.Handler):
    """Notes which watches ("pods", "jobs") met 410 Gone and listed again."""

    def __init__(self, relisted: set[str]) -> None:
        super().__init__(logging.INFO)
        self.relisted = relisted

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "410 Gone" in message:
            self.relisted.add(message.split()[0])


def test_a_real_410_gone_loses_and_repeats_no_completion(
    planes: tuple[Cluster, RelistScenario],
) -> None:
    """Jobs that end after both watches had to list again: each is seen to its end, once."""
    relist = planes[1]
    relist.result(timeout=120)
    assert relist.relisted == {"pods", "jobs"}
    assert len(relist.names) == len(RELIST_COMMANDS)
    per_job = Counter((event.jobid, event.name) for event in relist.events)
    assert set(per_job.values()) == {1}
    normal = ["submit", "validate", "depend", "priority", "alloc", "start", "finish"]
    expected = {(n, e) for n in relist.names for e in [*normal, "release", "free", "clean"]}
    assert set(per_job) == expected
    assert {e.context["status"] for e in relist.events if e.name == "finish"} == {0}
