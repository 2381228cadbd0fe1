"""The Kubernetes member against recorded watch streams, the client mocked at its HTTP call.

Every outcome (success, exit code, OOMKilled, the Pod's and the Job's DeadlineExceeded, cancel) is
replayed from tests/fixtures/kubernetes, recorded from a real API server by
tests/record_kubernetes.py; the resume from a BOOKMARK's resourceVersion and the re-list after
410 Gone must neither lose nor repeat an event. tests/test_kubernetes_cluster.py runs the same
member against the real API server.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from kubernetes.client import ApiClient
from kubernetes_fake import FakeCluster, fixture_lines

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, Outcome, exit_code
from ensemble_core.members import create_member
from ensemble_core.members.kubernetes import KubernetesMember
from ensemble_core.members.kubernetes_api import import_kubernetes, resize_target
from ensemble_core.members.kubernetes_tracker import JobTracker, wait_status
from ensemble_core.spec import JobSpec
from ensemble_core.translate.kubernetes import to_kubernetes

JOB = "ens-test-1"
NORMAL = ["submit", "validate", "depend", "priority", "alloc", "start", "finish"]
END = ["release", "free", "clean"]
SPEC = JobSpec(command=["sleep", "1"], group="sim", memory_mb=64)
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
users:
- name: test
  user: {token: test-token}
contexts:
- name: test
  context: {cluster: test, user: test}
- name: science
  context: {cluster: test, user: test, namespace: science}
current-context: test
"""


@pytest.fixture
def cluster(mocker):
    fake = FakeCluster()
    mocker.patch.object(ApiClient, "call_api", autospec=True, side_effect=fake.call_api)
    return fake


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return str(path)


def member(tmp_path, **settings) -> KubernetesMember:
    settings = {"image": "busybox:1.36", "ensemble_id": "ens-test", **settings}
    return KubernetesMember(log_dir=str(tmp_path / "logs"), **settings)


class Run:
    """A started member and the events it emitted, on a real asyncio loop."""

    def __init__(self, subject: KubernetesMember) -> None:
        self.member = subject
        self.events = []

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def context(self, name: str) -> dict:
        return next(event.context for event in self.events if event.name == name)

    async def until(self, name: str, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while name not in self.names:
            assert loop.time() < deadline, f"no {name} event; got {self.names}"
            await asyncio.sleep(0.01)

    @property
    def outcome(self) -> Outcome:
        record = AttemptRecord()
        for event in self.events:
            record.observe(event)
        return record.outcome


def run(subject: KubernetesMember, scenario) -> Run:
    """Start the member, play `scenario(run)`, close the member."""
    state = Run(subject)

    async def main() -> None:
        await subject.start(state.events.append)
        try:
            await scenario(state)
        finally:
            await subject.close()

    asyncio.run(main())
    return state


async def submit_and_wait(state: Run) -> None:
    assert await state.member.submit(SPEC) == JOB
    await state.until("clean")


def play(cluster: FakeCluster, name: str) -> None:
    cluster.add_watch("pods", fixture_lines(f"{name}.pods.jsonl"))
    cluster.add_watch("jobs", fixture_lines(f"{name}.jobs.jsonl"), wait_for="watch-pods-1-done")


def obj(line: str) -> dict:
    return json.loads(line)["object"]


def pod_of(scenario: str) -> str:
    """The name the Job controller gave the Pod of a recorded scenario."""
    return obj(fixture_lines(f"{scenario}.pods.jsonl")[0])["metadata"]["name"]


def index(lines: list[str], phase: str | None = None, kind: str | None = None) -> int:
    """The first line of a recorded Pod stream in this phase (or of this event type)."""
    for number, line in enumerate(lines):
        event = json.loads(line)
        if kind is not None and event["type"] == kind:
            return number
        if phase is not None and (event["object"].get("status") or {}).get("phase") == phase:
            return number
    raise AssertionError(f"no {phase or kind} line")


@pytest.mark.parametrize(
    ("scenario", "names", "status", "exception", "outcome"),
    [
        ("success", NORMAL, 0, None, Outcome.SUCCESS),
        ("failed", NORMAL, 3 << 8, None, Outcome.FAILED),
        (
            "oom",
            [*NORMAL[:-1], "exception", "finish"],
            137 << 8,
            {"type": "oom", "severity": 0, "note": "OOMKilled (memory limit 64Mi)"},
            Outcome.OOM,
        ),
        (
            "timeout",
            [*NORMAL[:-1], "exception", "finish"],
            143 << 8,
            {
                "type": "timeout",
                "severity": 0,
                "note": "DeadlineExceeded: Pod was active on the node longer than the specified "
                "deadline",
            },
            Outcome.TIMEOUT,
        ),
        (
            "deadline-job",
            [*NORMAL, "exception"],
            143 << 8,
            {
                "type": "timeout",
                "severity": 0,
                "note": "DeadlineExceeded: Job was active longer than specified deadline",
            },
            Outcome.TIMEOUT,
        ),
    ],
)
def test_each_outcome_from_recorded_streams(
    tmp_path, cluster, kubeconfig, scenario, names, status, exception, outcome
):
    play(cluster, scenario)
    cluster.logs[pod_of(scenario)] = f"log of {scenario}\n"
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*names, *END]
    assert state.context("finish") == {"status": status}
    if exception:
        assert state.context("exception") == exception
    assert state.outcome is outcome
    if outcome is Outcome.SUCCESS:
        assert state.member.log_paths(JOB) == []
    else:
        (path,) = state.member.log_paths(JOB)
        assert Path(path).read_text() == f"log of {scenario}\n"


def test_submission_creates_the_translated_job(tmp_path, cluster, kubeconfig):
    play(cluster, "success")
    state = run(member(tmp_path, ttl_seconds=60), submit_and_wait)
    expected = to_kubernetes(
        SPEC, image="busybox:1.36", namespace="default", ensemble_id="ens-test", ttl_seconds=60
    ).document
    expected["metadata"] = {"name": JOB, **expected["metadata"]}
    del expected["metadata"]["generateName"]
    assert cluster.requests("POST", "jobs") == [expected]
    assert state.member.describe()["selector"] == "ensemble.flux-framework.org/ensemble=ens-test"


def test_one_watch_per_resource_resumes_from_the_bookmark(tmp_path, cluster, kubeconfig):
    lines = fixture_lines("success.pods.jsonl")
    bookmark = index(lines, kind="BOOKMARK")  # sent while the Pod runs, before the watch's end
    assert bookmark < index(lines, phase="Succeeded")
    cluster.add_watch("pods", lines[: bookmark + 1])
    cluster.add_watch("pods", lines[bookmark + 1 :], wait_for=None)
    cluster.add_watch("jobs", fixture_lines("success.jobs.jsonl"), wait_for="watch-pods-2-done")
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL, *END]
    watches = cluster.watch_calls("pods")
    version = obj(lines[bookmark])["metadata"]["resourceVersion"]
    assert [w["resourceVersion"] for w in watches[:2]] == ["990", version]
    assert all(
        w["labelSelector"] == "ensemble.flux-framework.org/ensemble=ens-test" for w in watches
    )
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)
    assert len(cluster.list_calls("pods")) == 1
    assert len(cluster.list_calls("jobs")) == 1


def test_relist_after_410_gone_loses_and_repeats_nothing(tmp_path, cluster, kubeconfig):
    lines = fixture_lines("success.pods.jsonl")
    expired = fixture_lines("expired.json")
    final = obj(lines[index(lines, phase="Succeeded")])
    # The watch expires while the Pod runs; its end happens while no watch is open.
    cluster.add_watch("pods", lines[: index(lines, phase="Running") + 1] + expired)
    cluster.add_list("pods", [], "990")
    cluster.add_list("pods", [final], "1046")
    again = {"type": "MODIFIED", "object": {**final, "metadata": {**final["metadata"]}}}
    again["object"]["metadata"]["resourceVersion"] = "1047"
    cluster.add_watch("pods", [json.dumps(again)], wait_for=None)
    cluster.add_watch("jobs", fixture_lines("success.jobs.jsonl"), wait_for="watch-pods-2-done")
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL, *END]
    assert state.outcome is Outcome.SUCCESS
    assert len(cluster.list_calls("pods")) == 2
    assert [w["resourceVersion"] for w in cluster.watch_calls("pods")[:2]] == ["990", "1046"]


def test_relist_that_lacks_a_job_reads_it_and_ends_it_as_deleted(tmp_path, cluster, kubeconfig):
    """The Job was deleted while the Job watch was away and its Pod still ran."""
    pods = fixture_lines("success.pods.jsonl")
    cluster.add_watch("pods", pods[: index(pods, phase="Running") + 1])
    jobs = fixture_lines("success.jobs.jsonl")
    cluster.add_watch("jobs", jobs[:3] + fixture_lines("expired.json"), "watch-pods-1-done")
    cluster.add_list("jobs", [], "990")
    cluster.add_list("jobs", [], "1100")
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL[:-1], "exception", *END]
    assert state.context("exception")["note"] == "the Job was deleted outside the ensemble"
    assert len(cluster.list_calls("jobs")) == 2
    assert cluster.watch_calls("jobs")[1]["resourceVersion"] == "1100"
    assert cluster.requests("GET", "job") == [None]


def test_job_end_seen_before_the_pod_end_reads_the_pod(tmp_path, cluster, kubeconfig):
    pods = fixture_lines("success.pods.jsonl")
    cluster.add_watch("pods", pods[: index(pods, phase="Running") + 1])
    cluster.add_watch("jobs", fixture_lines("success.jobs.jsonl"), wait_for="watch-pods-1-done")
    cluster.job_pods[JOB] = [obj(pods[index(pods, phase="Succeeded")])]
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL, *END]
    assert {"labelSelector": f"job-name={JOB}"}.items() <= cluster.list_calls("pods")[-1].items()


def test_cancel_deletes_the_job_and_ignores_what_follows(tmp_path, cluster, kubeconfig):
    cluster.add_watch("pods", fixture_lines("cancel-running.pods.jsonl"))
    cluster.add_watch("pods", fixture_lines("cancel-deleted.pods.jsonl"), wait_for="delete-job")
    cluster.add_watch("jobs", fixture_lines("cancel-running.jobs.jsonl"))
    cluster.add_watch("jobs", fixture_lines("cancel-deleted.jobs.jsonl"), wait_for="delete-job")

    async def scenario(state: Run) -> None:
        await state.member.submit(SPEC)
        await state.until("start")
        await state.member.cancel(JOB)
        await asyncio.to_thread(cluster.wait, "watch-pods-2-done")
        await asyncio.to_thread(cluster.wait, "watch-jobs-2-done")
        await asyncio.sleep(0.05)

    state = run(member(tmp_path), scenario)
    assert state.names == [*NORMAL[:-1], "exception", *END]
    assert state.context("exception") == {
        "type": "cancel",
        "severity": 0,
        "note": "cancelled by the ensemble",
    }
    assert state.outcome is Outcome.CANCELLED
    (delete,) = [q for m, r, q, _ in cluster.calls if m == "DELETE"]
    assert delete == {"propagationPolicy": "Background"}
    assert state.member.log_paths(JOB) == []


def test_job_deleted_outside_the_ensemble_is_cancelled(tmp_path, cluster, kubeconfig):
    cluster.add_watch("pods", fixture_lines("cancel-running.pods.jsonl"))
    cluster.add_watch("jobs", fixture_lines("cancel-running.jobs.jsonl"))
    cluster.add_watch("jobs", fixture_lines("cancel-deleted.jobs.jsonl"), "watch-pods-1-done")
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL[:-1], "exception", *END]
    assert state.context("exception")["note"] == "the Job was deleted outside the ensemble"
    assert state.outcome is Outcome.CANCELLED


def test_the_pods_final_state_ends_the_job_without_the_jobs_condition(
    tmp_path, cluster, kubeconfig
):
    """restartPolicy Never and backoffLimit 0: the terminated Pod is final, the Job controller's
    condition (seconds later) is not waited for."""
    cluster.add_watch("pods", fixture_lines("success.pods.jsonl"))
    state = run(member(tmp_path), submit_and_wait)

    assert state.names == [*NORMAL, *END]
    assert cluster.watch_calls("jobs")  # watched, but nothing came
    assert cluster.list_calls("pods") == cluster.list_calls("pods")[:1]  # no read of the Pod


def test_an_unreadable_object_ends_its_job_only(tmp_path, cluster, kubeconfig, caplog):
    second = "ens-test-2"
    broken = json.loads(fixture_lines("success.pods.jsonl")[0])
    broken["object"]["status"] = {"phase": "Running", "containerStatuses": 7}
    cluster.add_watch(
        "pods", [json.dumps(broken), *renamed("success.pods.jsonl", second)], f"create-{second}"
    )

    async def scenario(state: Run) -> None:
        assert await state.member.submit(SPEC) == JOB
        assert await state.member.submit(SPEC) == second
        while sum(event.name == "clean" for event in state.events) < 2:
            await asyncio.sleep(0.01)

    state = run(member(tmp_path), scenario)
    first = [event for event in state.events if event.jobid == JOB]
    assert [event.name for event in first] == [*NORMAL[:4], "exception", "clean"]
    assert first[4].context == {
        "type": "member",
        "severity": 0,
        "note": "the kubernetes member cannot read the pod (TypeError: 'int' object is not "
        "iterable)",
    }
    assert [e.name for e in state.events if e.jobid == second] == [*NORMAL, *END]
    assert "cannot read a pods ADDED event" in caplog.text


def test_watches_that_cannot_be_resumed_tell_the_controller_once(tmp_path, cluster, kubeconfig):
    for resource in ("pods", "jobs"):
        cluster.fail_watches(resource, 500, "InternalError", "etcdserver: no leader")
    lost: list[str] = []
    subject = member(tmp_path, reconnect_seconds=1)
    subject.on_lost = lost.append

    async def scenario(state: Run) -> None:
        while not lost:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # both watches have given up by now

    run(subject, scenario)
    (reason,) = lost
    assert re.fullmatch(
        r"the Kubernetes (pods|jobs) watch in namespace 'default' could not be resumed for 1 s "
        r"\(last error: 500 etcdserver: no leader\)",
        reason,
    )
    assert len(cluster.watch_calls("pods")) >= 2  # it tried again before giving up


def test_a_log_that_cannot_be_read_is_one_line(tmp_path, cluster, kubeconfig, caplog):
    play(cluster, "failed")
    page = "<html>\n<body>502 Bad Gateway</body>\n</html>"
    cluster.fail("GET", "log", 500, "InternalError", page)
    state = run(member(tmp_path), submit_and_wait)

    assert state.outcome is Outcome.FAILED
    assert state.member.log_paths(JOB) == []
    (record,) = [r for r in caplog.records if "could not be saved" in r.getMessage()]
    assert record.getMessage() == (
        f"kubernetes: the log of {JOB} (Pod {pod_of('failed')}) could not be saved: 500 <html>"
    )


MINICLUSTER = {
    "apiVersion": "flux-framework.org/v1alpha2",
    "kind": "MiniCluster",
    "metadata": {"name": "flux-sample", "namespace": "hpc", "resourceVersion": "77"},
    "spec": {"size": 2, "minSize": 1, "maxSize": 4, "containers": [{"image": "flux:latest"}]},
    "status": {"size": 2, "maximumSize": 4, "selector": "hpc-selector=flux-sample"},
}


def test_grow_and_shrink_patch_the_minicluster_within_its_limits(tmp_path, cluster, kubeconfig):
    cluster.miniclusters[("hpc", "flux-sample")] = json.loads(json.dumps(MINICLUSTER))
    said = []

    async def scenario(state: Run) -> None:
        said.append(await state.member.grow(1))
        said.append(await state.member.grow(5))
        said.append(await state.member.shrink(10))
        said.append(await state.member.shrink(1))

    run(member(tmp_path, minicluster="hpc/flux-sample"), scenario)
    assert said == [
        "MiniCluster hpc/flux-sample size 2 -> 3 (min 1, max 4)",
        "MiniCluster hpc/flux-sample size 3 -> 4 (min 1, max 4)",
        "MiniCluster hpc/flux-sample size 4 -> 1 (min 1, max 4)",
        "MiniCluster hpc/flux-sample stays at size 1 (min 1, max 4)",
    ]
    patches = cluster.requests("PATCH", "minicluster")
    assert patches == [{"spec": {"size": 3}}, {"spec": {"size": 4}}, {"spec": {"size": 1}}]


def test_resize_limits_follow_the_flux_operator_defaults():
    assert resize_target({"spec": {"size": 3}}, 2) == (3, 3, 1, 3)
    assert resize_target({"spec": {"size": 3}, "status": {"maximumSize": 6}}, 2) == (3, 5, 1, 6)
    assert resize_target({"spec": {"size": 4, "minSize": 2, "maxSize": 8}}, -5) == (4, 2, 2, 8)


def test_no_minicluster_means_no_resize(tmp_path, cluster, kubeconfig):
    said = []

    async def scenario(state: Run) -> None:
        said.append(await state.member.grow(2))

    run(member(tmp_path), scenario)
    assert said == ["kubernetes member has no minicluster setting: nothing to resize"]


# -- bad input: one clear MemberError each -----------------------------------------------------


def start(subject: KubernetesMember) -> None:
    asyncio.run(subject.start(lambda event: None))


def test_no_image(tmp_path):
    with pytest.raises(MemberError, match=r"needs the container image its jobs run in\. Set image"):
        create_member("kubernetes", namespace="default")


def test_no_kubeconfig_and_not_in_a_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(
        MemberError, match=r"no Kubernetes configuration: .* not running in a cluster"
    ):
        start(member(tmp_path))


def test_named_kubeconfig_missing(tmp_path):
    with pytest.raises(MemberError, match=r"kubeconfig file .*nope does not exist"):
        start(member(tmp_path, kubeconfig=str(tmp_path / "nope")))


def test_unknown_context(tmp_path, kubeconfig):
    with pytest.raises(MemberError, match=r"cannot use the kubeconfig .*kubeconfig: .*mars"):
        start(member(tmp_path, context="mars"))


def test_in_cluster_without_a_service_account_token(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(MemberError, match="running in a Kubernetes Pod, but its service account"):
        start(member(tmp_path))


def test_forbidden_namespace(tmp_path, cluster, kubeconfig):
    message = (
        'pods is forbidden: User "system:serviceaccount:default:ensemble" cannot list resource '
        '"pods" in API group "" in the namespace "restricted"'
    )
    cluster.fail("GET", "pods", 403, "Forbidden", message)
    with pytest.raises(MemberError) as error:
        start(member(tmp_path, namespace="restricted"))
    text = str(error.value)
    assert text.startswith(
        f"forbidden to list and watch pods in namespace 'restricted' ({message})"
    )
    assert "kubectl apply -n restricted -f examples/kubernetes/rbac.yaml" in text


def test_unreachable_api_server(tmp_path, kubeconfig):
    with pytest.raises(
        MemberError, match="cannot reach the Kubernetes API server to list and watch"
    ):
        start(member(tmp_path))


def test_unknown_minicluster(tmp_path, cluster, kubeconfig):
    with pytest.raises(MemberError, match="MiniCluster 'nope' not found in namespace 'default'"):
        start(member(tmp_path, minicluster="nope"))


def test_job_name_taken(tmp_path, cluster, kubeconfig):
    cluster.fail("POST", "jobs", 409, "AlreadyExists", f'jobs.batch "{JOB}" already exists')

    async def scenario(state: Run) -> None:
        with pytest.raises(MemberError, match=f"a Job named {JOB} already exists"):
            await state.member.submit(SPEC)

    assert run(member(tmp_path), scenario).names == []


def test_missing_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    with pytest.raises(MemberError, match=r"pip install 'ensemble-executors\[kubernetes\]'"):
        import_kubernetes()


def test_namespace_comes_from_the_kubeconfig_context(tmp_path, cluster, kubeconfig):
    async def scenario(state: Run) -> None:
        pass

    state = run(member(tmp_path, context="science"), scenario)
    assert state.member.namespace == "science"
    assert state.member.describe()["namespace"] == "science"


# -- through the controller ----------------------------------------------------------------------


def renamed(name: str, job: str) -> list[str]:
    return [line.replace(JOB, job) for line in fixture_lines(name)]


def test_controller_resubmits_an_oom_job_with_more_memory(tmp_path, cluster, kubeconfig):
    from ensemble_core.api import open_ensemble

    cluster.add_watch("pods", fixture_lines("oom.pods.jsonl"), wait_for=f"create-{JOB}")
    cluster.add_watch("pods", renamed("success.pods.jsonl", "ens-test-2"), "create-ens-test-2")
    cluster.add_watch("jobs", fixture_lines("oom.jobs.jsonl"), wait_for="watch-pods-1-done")
    cluster.add_watch("jobs", renamed("success.jobs.jsonl", "ens-test-2"), "watch-pods-2-done")
    settings = {"image": "busybox:1.36", "ensemble_id": "ens-test", "log_dir": str(tmp_path)}
    ensemble = open_ensemble("kubernetes", ["retry-oom"], settings)
    try:
        handle = ensemble.submit(SPEC)
        assert handle.wait(20) is Outcome.SUCCESS
    finally:
        ensemble.close()
    assert [attempt.member_id for attempt in handle.attempts] == [JOB, "ens-test-2"]
    limits = [
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        for job in cluster.requests("POST", "jobs")
    ]
    assert limits == ["64Mi", "128Mi"]


def test_controller_reports_the_saved_log_of_a_failed_job(tmp_path, cluster, kubeconfig):
    from ensemble_core.api import open_ensemble

    play(cluster, "failed")
    cluster.logs[pod_of("failed")] = "sh: exit 3\n"
    settings = {"image": "busybox:1.36", "ensemble_id": "ens-test", "log_dir": str(tmp_path)}
    ensemble = open_ensemble("kubernetes", [], settings)
    try:
        handle = ensemble.submit(SPEC)
        assert handle.wait(20) is Outcome.FAILED
    finally:
        ensemble.close()
    assert handle.exit_code == 3
    assert handle.log_paths == [str(tmp_path / f"{JOB}.log")]
    assert (tmp_path / f"{JOB}.log").read_text() == "sh: exit 3\n"


# -- the tracker alone -------------------------------------------------------------------------


def test_what_the_watches_see_before_create_returns_waits_for_submit():
    emitted, ended = [], []
    tracker = JobTracker(emitted.append, ended.append, clock=lambda: 1.0)
    pods = fixture_lines("success.pods.jsonl")
    tracker.expect(JOB)
    running = obj(pods[index(pods, phase="Running")])
    tracker.observe("pods", obj(pods[0]))
    tracker.observe("pods", running)
    assert emitted == []
    tracker.submitted(JOB)
    assert [e.name for e in emitted] == NORMAL[:-1]
    tracker.observe("pods", running)
    tracker.observe("jobs", {"metadata": {"name": "someone-else"}})
    assert len(emitted) == len(NORMAL) - 1
    assert ended == []


def test_a_list_that_ran_while_the_job_was_being_created_makes_the_member_check_it():
    tracker = JobTracker(lambda event: None, lambda name: None, clock=lambda: 1.0)
    tracker.expect(JOB)
    assert tracker.listed("jobs", []) == []  # not created yet, as far as we know
    assert tracker.submitted(JOB) is True  # so read it: it may have been created and deleted
    assert tracker.listed("jobs", []) == []  # that read is in flight: no second one
    tracker.confirmed(JOB)
    assert tracker.listed("jobs", []) == [JOB]

    tracker.expect("listed-meanwhile")
    tracker.listed("jobs", [])
    tracker.listed("jobs", [{"metadata": {"name": "listed-meanwhile"}}])
    assert tracker.submitted("listed-meanwhile") is False


def test_wait_status_of_a_terminated_container():
    assert wait_status({"exitCode": 0}) == 0
    assert wait_status({"exitCode": 3}) == 3 << 8
    assert wait_status({"exitCode": 137, "signal": 9}) == 9
    assert exit_code(wait_status({"exitCode": 137})) == 137
