"""The Kubernetes member: each JobSpec a `batch/v1` Job, their life read from two watches.

One watch over the ensemble's Pods and one over its Jobs (one label selector for all jobs, not one
watch per job) run in threads of their own and hand what they see to the loop thread, where the
tracker turns it into RFC 21 events. Cancel deletes the Job and its Pod. grow/shrink resize a Flux
Operator MiniCluster named in the settings. The official `kubernetes` client is imported only when
the member starts, so the core runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.members.base import TOKEN_ATTRIBUTE, EmitEvent, Member
from ensemble_core.members.kubernetes_api import (
    MINICLUSTER,
    api_error,
    connect,
    error_line,
    import_kubernetes,
    minicluster_ref,
    resize_target,
)
from ensemble_core.members.kubernetes_tracker import JobTracker, object_name
from ensemble_core.members.kubernetes_watch import ResourceWatch, list_objects
from ensemble_core.spec import JobSpec
from ensemble_core.translate.kubernetes import (
    CONTAINER,
    DEFAULT_TTL_SECONDS,
    ENSEMBLE_LABEL,
    LABEL_PREFIX,
    dns_label,
    label_value,
    to_kubernetes,
)

log = logging.getLogger(__name__)

#: How long `close` waits for each watch thread to end (`stop` interrupts a blocked read).
_JOIN_SECONDS = 5.0
#: Create failures after which the Job may exist all the same (no answer, or a server error).
_UNSURE = (None, 0, 500, 502, 503, 504)
#: The label that carries the controller's token (`TOKEN_ATTRIBUTE`) on a Job and its Pod, so a
#: restarted controller's member finds them again (`adopt`).
TOKEN_LABEL = f"{LABEL_PREFIX}/token"
#: Tokens asked for in one list request (`token in (...)`: the selector goes in the URL).
_TOKENS_PER_LIST = 100


class KubernetesMember(Member):
    """Jobs on a Kubernetes cluster, in one namespace, watched through one label selector.

    A Job and its Pod carry the controller's token as a label, so a restarted controller's
    member finds them (`adopt`) and watches them with its own (the selector then names every
    ensemble id the jobs have). `close` leaves every Job as it is: the controller cancels the
    jobs it wants gone before it closes the member.
    """

    name = "kubernetes"

    def __init__(
        self,
        *,
        image: str | None = None,
        namespace: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        minicluster: str | None = None,
        log_dir: str = "ensemble-logs",
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        ensemble_id: str | None = None,
        watch_seconds: int = 300,
        reconnect_seconds: float = 300.0,
    ) -> None:
        if not image:
            raise MemberError(
                "the kubernetes member needs the container image its jobs run in. "
                "Set image: NAME under member: in the ensemble file, or pass --image NAME"
            )
        self.image = image
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.context = context
        self.minicluster = minicluster
        self.log_dir = Path(log_dir)
        self.ttl_seconds = int(ttl_seconds)
        self.ensemble_id = dns_label(ensemble_id or f"ensemble-{secrets.token_hex(4)}", 40)
        self.watch_seconds = int(watch_seconds)
        self.reconnect_seconds = float(reconnect_seconds)
        self.selector = f"{ENSEMBLE_LABEL}={label_value(self.ensemble_id)}"
        #: The ensemble ids the watches follow: this member's, and those of jobs it adopted.
        self._ensembles = [label_value(self.ensemble_id)]
        self._counter = itertools.count(1)
        self._logs: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches: list[ResourceWatch] = []
        self._threads: list[threading.Thread] = []
        self._lost_lock = threading.Lock()
        self._lost_reported = False

    # -- the Member protocol ---------------------------------------------------------------

    async def start(self, emit: EmitEvent) -> None:
        k8s = import_kubernetes()
        self._loop = asyncio.get_running_loop()
        api_client, configured = await asyncio.to_thread(
            connect, k8s, self.kubeconfig, self.context
        )
        self.namespace = self.namespace or configured or "default"
        self._core = k8s.client.CoreV1Api(api_client)
        self._batch = k8s.client.BatchV1Api(api_client)
        self._custom = k8s.client.CustomObjectsApi(api_client)
        self._tracker = JobTracker(emit, self._ended)
        watches = await self._listed_watches()
        if self.minicluster:
            await self._read_minicluster()
        self._run_watches(watches)

    async def _listed_watches(self) -> list[ResourceWatch]:
        """A watch of Pods and one of Jobs by the current selector, each listed once (the
        list's objects are observed before this returns)."""
        calls = {"pods": self._core.list_namespaced_pod, "jobs": self._batch.list_namespaced_job}
        watches = []
        for kind, call in calls.items():
            watch = ResourceWatch(
                kind,
                call,
                self.namespace,
                self.selector,
                self._deliverer(kind),
                watch_seconds=self.watch_seconds,
                give_up_seconds=self.reconnect_seconds,
                on_lost=self._lost,
            )
            try:
                await asyncio.to_thread(watch.list)
            except Exception as error:
                raise api_error(error, f"list and watch {kind}", self.namespace) from None
            watches.append(watch)
        return watches

    def _run_watches(self, watches: list[ResourceWatch]) -> None:
        for watch in watches:
            thread = threading.Thread(
                target=watch.run, name=f"kubernetes-{watch.kind}", daemon=True
            )
            thread.start()
            self._watches.append(watch)
            self._threads.append(thread)

    async def submit(self, spec: JobSpec) -> str:
        name = f"{self.ensemble_id}-{next(self._counter)}"
        job = to_kubernetes(
            spec,
            image=self.image,
            namespace=self.namespace,
            ensemble_id=self.ensemble_id,
            ttl_seconds=self.ttl_seconds,
            name=name,
        ).document
        if TOKEN_ATTRIBUTE in spec.attributes:
            _label(job, TOKEN_LABEL, label_value(spec.attributes[TOKEN_ATTRIBUTE]))
        self._tracker.expect(name)
        try:
            await asyncio.to_thread(self._batch.create_namespaced_job, self.namespace, job)
        except Exception as error:
            self._tracker.forget(name)
            status = getattr(error, "status", None)
            if status in _UNSURE:
                self._spawn(self._delete_if_created(name))
            if status == 409:
                raise MemberError(
                    f"a Job named {name} already exists in namespace '{self.namespace}'. "
                    "Choose another ensemble_id, or delete the old Jobs: "
                    f"kubectl delete jobs -n {self.namespace} -l {self.selector}"
                ) from None
            raise api_error(error, "create Jobs", self.namespace) from None
        if self._tracker.submitted(name):
            self._spawn(self._confirm_gone(name))
        return name

    async def cancel(self, jobid: Any) -> None:
        if not self._tracker.begin_cancel(jobid):
            return
        try:
            await self._delete_job(jobid)
        except Exception as error:
            self._tracker.abort_cancel(jobid)
            raise api_error(error, f"delete the Job {jobid}", self.namespace) from None
        self._tracker.end_cancel(jobid)

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Follow the Jobs a previous controller submitted, found by their token label (a Job
        whose name was learned must still carry its token). Their Job and Pod as listed now
        are replayed as events once this returns, through the same mapping as for the jobs
        this member submits: a job that ended meanwhile gets the outcome its Pod or Job tells.
        The watches then follow them too (their ensemble ids join the selector)."""
        if not self._watches:
            raise MemberError("the kubernetes member is not started. Call start() before adopt()")
        wanted = {label_value(token): (jobid, token) for jobid, token in jobs}
        listed = {kind: await self._list_tokens(kind, list(wanted)) for kind in ("jobs", "pods")}
        found: dict[str, Any] = {}
        created: dict[str, str | None] = {}
        for job in listed["jobs"]:
            metadata = job.get("metadata") or {}
            labels = metadata.get("labels") or {}
            jobid, token = wanted.get(labels.get(TOKEN_LABEL), (None, None))
            name = metadata.get("name")
            if token is None or not name or jobid not in (None, name) or token in found:
                continue  # not asked for, or another Job than the one whose name was learned
            found[token] = name
            created[name] = metadata.get("creationTimestamp")
            self._tracker.expect(name)  # what is observed of it is held until it is known
            ensemble = labels.get(ENSEMBLE_LABEL)
            if ensemble and ensemble not in self._ensembles:
                self._ensembles.append(ensemble)
        for kind, objects in listed.items():
            for obj in objects:
                self._observe_one(kind, "listed", obj)
        await self._follow_ensembles()
        # After this returns: the controller knows the names by then, as after a submission.
        self._loop.call_soon(self._adopted, created)
        log.info("kubernetes member: adopted %d of %d job(s)", len(found), len(jobs))
        return found

    async def grow(self, value: int) -> str:
        return await self._resize(value)

    async def shrink(self, value: int) -> str:
        return await self._resize(-value)

    def describe(self) -> dict[str, Any]:
        described = {
            "member": self.name,
            "namespace": self.namespace,
            "image": self.image,
            "selector": self.selector,
        }
        if self.minicluster:
            described["minicluster"] = self.minicluster
        return described

    def log_paths(self, jobid: Any) -> list[str]:
        path = self._logs.get(jobid)
        return [path] if path else []

    async def close(self) -> None:
        for watch in self._watches:
            watch.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, _JOIN_SECONDS)
        for task in list(self._tasks):
            task.cancel()

    # -- adoption ---------------------------------------------------------------------------

    async def _list_tokens(self, kind: str, tokens: list[str]) -> list[dict[str, Any]]:
        """The Jobs or Pods of the namespace that carry one of these token labels."""
        call = self._batch.list_namespaced_job if kind == "jobs" else self._core.list_namespaced_pod
        objects: list[dict[str, Any]] = []
        for first in range(0, len(tokens), _TOKENS_PER_LIST):
            selector = f"{TOKEN_LABEL} in ({','.join(tokens[first : first + _TOKENS_PER_LIST])})"
            try:
                items, _version = await asyncio.to_thread(
                    list_objects, call, self.namespace, selector
                )
            except Exception as error:
                raise api_error(error, f"list {kind}", self.namespace) from None
            objects += items
        return objects

    async def _follow_ensembles(self) -> None:
        """Watch by every ensemble id followed: new watches first (their list catches up on
        what happened meanwhile), then the old ones stop."""
        values = ",".join(self._ensembles)
        selector = f"{ENSEMBLE_LABEL} in ({values})" if len(self._ensembles) > 1 else None
        if selector is None or selector == self.selector:
            return
        self.selector = selector
        watches = await self._listed_watches()
        old = list(zip(self._watches, self._threads, strict=True))
        self._watches, self._threads = [], []
        self._run_watches(watches)
        for watch, thread in old:
            watch.stop()
            await asyncio.to_thread(thread.join, _JOIN_SECONDS)

    def _adopted(self, created: dict[str, str | None]) -> None:
        """Adopted Jobs (name: creation time) are known to the controller now: emit."""
        for name, when in created.items():
            if self._tracker.submitted(name, when):
                self._spawn(self._confirm_gone(name))

    def _skip_taken_names(self, jobs: list[Any]) -> None:
        """Name new Jobs past those of this ensemble id that exist (a reused ensemble_id: the
        run before, or a resumed one)."""
        pattern = re.compile(rf"{re.escape(self.ensemble_id)}-(\d+)")
        taken = [int(m.group(1)) for j in jobs if (m := pattern.fullmatch(object_name(j) or ""))]
        if taken:
            following = next(self._counter)
            self._counter = itertools.count(max(following, max(taken) + 1))

    # -- watches to tracker ----------------------------------------------------------------

    def _lost(self, reason: str) -> None:
        """What a watch thread calls when it gives up: the controller hears it on its loop,
        once (the other watch may give up too)."""
        with self._lost_lock:
            if self._lost_reported:
                return
            self._lost_reported = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
            self._loop.call_soon_threadsafe(self.on_lost, reason)

    def _deliverer(self, kind: str) -> Callable[[str, Any], None]:
        """What a watch thread calls: the observation is handled on the loop thread."""

        def deliver(event_type: str, payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens any more
                self._loop.call_soon_threadsafe(self._observe, kind, event_type, payload)

        return deliver

    def _observe(self, kind: str, event_type: str, payload: Any) -> None:
        """What a watch saw, on the loop thread: a list ("SYNC") or one object's change."""
        if event_type != "SYNC":
            self._observe_one(kind, event_type, payload)
            return
        if kind == "jobs":
            self._skip_taken_names(payload)
        for obj in payload:
            self._observe_one(kind, "listed", obj)
        for name in self._tracker.listed(kind, payload):
            self._spawn(self._confirm_gone(name))

    def _observe_one(self, kind: str, event_type: str, obj: Any) -> None:
        """An object this member cannot read ends the job it belongs to (an `exception` saying
        why), never the watch or the other jobs."""
        try:
            self._tracker.observe(kind, obj, deleted=event_type == "DELETED")
        except Exception as error:
            log.exception("kubernetes: cannot read a %s %s event", kind, event_type)
            self._tracker.fail_unreadable(kind, obj, f"{type(error).__name__}: {error}")

    def _ended(self, name: str) -> None:
        self._spawn(self._finish(name))

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, name: str) -> None:
        """A job is over: read its Pod if its end was not seen, keep a failed Pod's log, clean."""
        try:
            if not self._tracker.pod_known(name):
                pods, _ = await asyncio.to_thread(
                    list_objects, self._core.list_namespaced_pod, self.namespace, f"job-name={name}"
                )
                for pod in pods:
                    self._tracker.observe("pods", pod)
            pod = self._tracker.failed_pod(name)
            if pod is not None:
                await self._save_log(name, pod)
        except Exception as error:
            log.warning("kubernetes: could not read the end of %s: %s", name, error_line(error))
        finally:
            self._tracker.clean(name)

    async def _confirm_gone(self, name: str) -> None:
        """A re-list lacked this Job: read it, and treat it as deleted if it is not found."""
        try:
            job = await asyncio.to_thread(
                self._batch.read_namespaced_job, name, self.namespace, _preload_content=False
            )
        except Exception as error:
            self._tracker.confirmed(name)
            if getattr(error, "status", None) == 404:
                self._tracker.gone(name)
            else:
                log.warning("kubernetes: could not read the Job %s: %s", name, error_line(error))
            return
        self._tracker.confirmed(name)
        self._tracker.observe("jobs", _json(job))

    async def _delete_if_created(self, name: str) -> None:
        """A create call that failed without a clear answer may have created the Job all the
        same: delete it, so that nothing runs that no job stands for."""
        try:
            await self._delete_job(name)
        except Exception as error:
            log.warning(
                "kubernetes: the Job %s may have been created by a failed call and could not "
                "be deleted (%s): kubectl delete job -n %s %s",
                name,
                error_line(error),
                self.namespace,
                name,
            )

    async def _delete_job(self, name: str) -> None:
        """Delete a Job and, in the background, its Pod; a Job already gone is no error."""
        try:
            await asyncio.to_thread(
                self._batch.delete_namespaced_job,
                name,
                self.namespace,
                propagation_policy="Background",
            )
        except Exception as error:
            if getattr(error, "status", None) != 404:
                raise

    async def _save_log(self, name: str, pod: str) -> None:
        try:
            text = await asyncio.to_thread(
                self._core.read_namespaced_pod_log, pod, self.namespace, container=CONTAINER
            )
        except Exception as error:
            log.warning(
                "kubernetes: the log of %s (Pod %s) could not be saved: %s",
                name,
                pod,
                error_line(error),
            )
            return
        path = self.log_dir / f"{name}.log"
        await asyncio.to_thread(_write, path, text)
        self._logs[name] = str(path)

    # -- MiniCluster ----------------------------------------------------------------------

    async def _read_minicluster(self) -> dict[str, Any]:
        namespace, name = minicluster_ref(self.minicluster or "", self.namespace or "default")
        try:
            return await asyncio.to_thread(
                self._custom.get_namespaced_custom_object,
                MINICLUSTER["group"],
                MINICLUSTER["version"],
                namespace,
                MINICLUSTER["plural"],
                name,
            )
        except Exception as error:
            if getattr(error, "status", None) == 404:
                raise MemberError(
                    f"MiniCluster '{name}' not found in namespace '{namespace}'. Fix the "
                    f"minicluster setting (kubectl get miniclusters -n {namespace} lists them), "
                    "and check that the Flux Operator is installed"
                ) from None
            raise api_error(error, "read MiniClusters", namespace) from None

    async def _resize(self, change: int) -> str:
        if not self.minicluster:
            return "kubernetes member has no minicluster setting: nothing to resize"
        namespace, name = minicluster_ref(self.minicluster, self.namespace or "default")
        current, target, low, high = resize_target(await self._read_minicluster(), change)
        where = f"MiniCluster {namespace}/{name}"
        if target == current:
            return f"{where} stays at size {current} (min {low}, max {high})"
        try:
            await asyncio.to_thread(
                self._custom.patch_namespaced_custom_object,
                MINICLUSTER["group"],
                MINICLUSTER["version"],
                namespace,
                MINICLUSTER["plural"],
                name,
                {"spec": {"size": target}},
            )
        except Exception as error:
            raise api_error(error, "patch MiniClusters", namespace) from None
        return f"{where} size {current} -> {target} (min {low}, max {high})"


def _label(job: dict[str, Any], key: str, value: str) -> None:
    """Put a label on a Job and on the Pod its template makes."""
    job["metadata"]["labels"][key] = value
    job["spec"]["template"]["metadata"]["labels"][key] = value


def _json(response: Any) -> dict[str, Any]:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
