"""A simulated kubelet: what a node does for the Pods of one namespace, with local processes.

The Kubernetes control plane the tests start (`$ENSEMBLE_K8S_CONTROL_PLANE start DIR`) has no
kubelet and no container runtime: Pods stay Pending. This program plays the node's part against
that real API server, as Kubernetes' own kwok does, but runs what the Pods ask for:

- it registers a Node (Ready, with an InternalIP and a kubelet port), renews its Lease, and binds
  every Pending Pod of its namespace to it (the `pods/binding` subresource: the scheduler's part);
- it runs each Pod's container command as a local process (the image is ignored; `workingDir`,
  `env`, `command` and `args` are honoured), its output in a log file;
- it enforces the container's memory limit the way a container runtime does, with a memory cgroup
  per container (cgroup v1, where this process may create them): the kernel kills a container
  past its limit, and the container is `terminated` with reason `OOMKilled`, exit code 137;
- it enforces the Pod's `activeDeadlineSeconds` (counted from the Pod's `startTime`): the Pod
  fails with reason `DeadlineExceeded` and its container is killed;
- it patches `pods/status` as a kubelet does: Running with a running container, then Succeeded or
  Failed with the terminated state (exitCode, reason Completed, Error, OOMKilled or StartError);
- a Pod being deleted has its processes killed (SIGTERM, SIGKILL after the grace period) and is
  then deleted for good (grace period 0), as a kubelet confirms a deletion;
- it serves container logs on the kubelet API (`/containerLogs/NS/POD/CONTAINER`, HTTPS with a
  self-signed certificate), so `kubectl logs` and the client's `read_namespaced_pod_log` go through
  the API server's real `pods/log` proxy. That works because the API server has no
  `--kubelet-certificate-authority`: without one it does not verify a kubelet's certificate.

Run: `python tests/kubelet.py --kubeconfig FILE --namespace NS --dir DIR`. It prints one JSON line
when the Node is registered and the Pod watch runs, then serves until SIGTERM or SIGINT, when it
kills every container it runs. `start_kubelet` does that from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import http.server
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.utils import parse_quantity

from ensemble_core.members.kubernetes_watch import ApiStatusError, ResourceWatch

log = logging.getLogger("kubelet")

DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
#: What `terminationGracePeriodSeconds` defaults to.
DEFAULT_GRACE_SECONDS = 30
#: How a container command runs inside its memory cgroup: the shell joins it, then becomes the
#: command (so the cgroup holds the container from its first instruction).
JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


def now() -> str:
    """A timestamp as Kubernetes writes them (RFC 3339, seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    """A MicroTime (the Lease's renewTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the API server ------------------------------------------------------------------------------


class Api:
    """Plain JSON requests to the API server with the kubeconfig's credentials (no models)."""

    def __init__(self, kubeconfig: str) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(
            config_file=kubeconfig, client_configuration=configuration, persist_config=False
        )
        self.host = configuration.host
        self.headers = {"Accept": "application/json"}
        for setting in configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                self.headers[setting["key"]] = setting["value"]
        self.http = urllib3.PoolManager(
            maxsize=16,
            ca_certs=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            cert_reqs="CERT_REQUIRED" if configuration.verify_ssl else "CERT_NONE",
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        patch: str = "strategic-merge-patch",
        query: dict[str, Any] | None = None,
        stream: bool = False,
        timeout: float | None = 30.0,
    ) -> Any:
        """The decoded answer (or, with `stream`, the open response); ApiStatusError if not 2xx."""
        headers = dict(self.headers)
        if body is not None:
            kind = f"application/{patch}+json" if method == "PATCH" else "application/json"
            headers["Content-Type"] = kind
        response = self.http.request(
            method,
            self.host + path,
            fields=query,
            body=None if body is None else json.dumps(body).encode(),
            headers=headers,
            preload_content=not stream,
            timeout=timeout,
        )
        if stream and 200 <= response.status <= 299:
            return response
        data = response.data
        if not 200 <= response.status <= 299:
            raise ApiStatusError(response.status, data.decode(errors="replace"))
        return json.loads(data) if data else None

    def pod_lister(self, namespace: str):
        """A list call in the shape ResourceWatch takes (the client's `list_namespaced_pod`)."""

        def list_pods(
            space: str,
            *,
            label_selector: str = "",
            watch: bool = False,
            resource_version: str | None = None,
            allow_watch_bookmarks: bool = False,
            timeout_seconds: int | None = None,
            _request_timeout: float | None = None,
            _preload_content: bool = False,
        ) -> Any:
            query: dict[str, Any] = {}
            if label_selector:
                query["labelSelector"] = label_selector
            if watch:
                query.update(watch="true", allowWatchBookmarks=str(allow_watch_bookmarks).lower())
                query["resourceVersion"] = resource_version or ""
                query["timeoutSeconds"] = str(timeout_seconds or 300)
            return self.http.request(
                "GET",
                f"{self.host}/api/v1/namespaces/{space}/pods",
                fields=query,
                headers=self.headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=10, read=_request_timeout),
            )

        return list_pods


# -- memory limits -------------------------------------------------------------------------------


class MemoryCgroups:
    """A memory cgroup (v1) per container below this process's own, as a container runtime makes
    them, so that the kernel itself kills a container that goes past its limit."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def find(cls) -> MemoryCgroups | None:
        """Cgroups under this process's memory cgroup, or None where it may not create them."""
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" not in controllers.split(","):
                continue
            parent = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            for stale in parent.glob("kubelet-*"):  # left by a kubelet that was killed
                if not Path("/proc", stale.name.removeprefix("kubelet-")).exists():
                    for group in [*stale.iterdir(), stale]:
                        if group.is_dir():
                            MemoryCgroups.remove(group)
            root = parent / f"kubelet-{os.getpid()}"
            try:
                root.mkdir()
            except OSError:
                return None
            return cls(root)
        return None

    def create(self, name: str, limit: int) -> Path:
        group = self.root / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit))
        swap = group / "memory.memsw.limit_in_bytes"  # no swapping past the limit either
        if swap.exists():
            with contextlib.suppress(OSError):
                swap.write_text(str(limit))
        return group

    @staticmethod
    def oom_killed(group: Path) -> bool:
        for line in (group / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return False

    @staticmethod
    def remove(group: Path) -> None:
        """Kill what is left in the cgroup, then remove it."""
        for _ in range(50):
            pids = (group / "cgroup.procs").read_text().split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                group.rmdir()
                return
            except OSError:
                time.sleep(0.02)
        log.warning("cannot remove the cgroup %s", group)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.root.rmdir()


# -- the kubelet API: container logs -------------------------------------------------------------


class HttpsServer:
    """A threaded HTTPS server on 127.0.0.1 (a free port) with a self-signed certificate, which
    `cert` names: the API server reaches a kubelet, or an admission webhook, this way."""

    def __init__(self, directory: Path, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.cert, key = directory / "serving.crt", directory / "serving.key"
        if not self.cert.exists():
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                 "-keyout", str(key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1"],
                check=True, capture_output=True,
            )  # fmt: skip
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Answers in one call, logs at debug level only."""

    def answer(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def log_server(directory: Path, logs: dict[tuple[str, str, str], Path]) -> HttpsServer:
    """`GET /containerLogs/NS/POD/CONTAINER`, what the API server proxies `pods/log` to (at the
    Node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`)."""

    class ContainerLogs(QuietHandler):
        def do_GET(self) -> None:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            path = logs.get(tuple(parts[1:])) if parts[0] == "containerLogs" else None
            if path is None or len(parts) != 4:
                self.answer(404, f"no container {'/'.join(parts[1:])} on this node\n".encode())
            else:
                self.answer(200, path.read_bytes())

    return HttpsServer(directory, ContainerLogs)


# -- Pods ----------------------------------------------------------------------------------------


@dataclass
class PodRun:
    """One Pod this node took: its container's process and why it was stopped, if it was."""

    namespace: str
    name: str
    uid: str
    pod: dict[str, Any]
    process: asyncio.subprocess.Process | None = None
    started_at: str | None = None
    #: "DeadlineExceeded" or "Deleted" once the kubelet decided to stop the Pod.
    stopping: str | None = None
    grace: float = DEFAULT_GRACE_SECONDS
    done: bool = False
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        return self.pod["spec"]["containers"][0]

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"


class Kubelet:
    """The node: its Node object, its Pods' processes and their status, in one asyncio loop."""

    def __init__(self, api: Api, namespace: str, node: str, directory: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.directory = directory
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        self.cgroups = MemoryCgroups.find()
        self.logs: dict[tuple[str, str, str], Path] = {}
        self.server = log_server(directory, self.logs)
        self.runs: dict[str, PodRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(16))
        self.server.start()
        await asyncio.to_thread(self._register)
        self.watch = ResourceWatch(
            "pods",
            self.api.pod_lister(self.namespace),
            self.namespace,
            "",
            lambda kind, payload: self.loop.call_soon_threadsafe(self._seen, kind, payload),
            watch_seconds=60,
            give_up_seconds=float("inf"),
        )
        watcher = threading.Thread(target=self.watch.run, name="pod-watch", daemon=True)
        watcher.start()
        print(
            json.dumps(
                {
                    "node": self.node,
                    "port": self.server.port,
                    "memory_limits": "cgroup" if self.cgroups else "none",
                }
            ),
            flush=True,
        )
        renewing = self.loop.create_task(self._renew_lease())
        await self._stopped.wait()
        renewing.cancel()
        self.watch.stop()
        for run in self.runs.values():
            self._signal(run, signal.SIGKILL)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self.server.stop()
        if self.cgroups:
            self.cgroups.close()

    def stop(self) -> None:
        self._stopped.set()

    def _register(self) -> None:
        """The Node, Ready, reachable at 127.0.0.1 on the log server's port; and its Lease."""
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": labels},
        }
        with contextlib.suppress(ApiStatusError):
            self.api.request("POST", "/api/v1/nodes", node)
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": "64Gi", "pods": "1000"}
        stamp = now()
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.server.port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "simulated kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.28.7-simulated",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.request("PATCH", f"/api/v1/nodes/{self.node}/status", {"status": status})
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now(),
            },
        }
        with contextlib.suppress(ApiStatusError):
            self.api.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease
            )

    async def _renew_lease(self) -> None:
        """The node's heartbeat, so that the node lifecycle controller keeps it Ready."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                body = {"spec": {"renewTime": micro_now()}}
                await asyncio.to_thread(self.api.request, "PATCH", path, body, patch="merge-patch")
            except Exception as error:
                log.warning("lease not renewed: %s", error)

    def _spawn(self, coroutine: Any) -> None:
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kubelet: %s", task.exception(), exc_info=task.exception())

    # -- what the watch sees -----------------------------------------------------------------

    def _seen(self, kind: str, payload: Any) -> None:
        if kind == "SYNC":
            listed = {pod["metadata"]["uid"] for pod in payload}
            for uid, run in list(self.runs.items()):
                if uid not in listed:
                    self._deleted(run)
            for pod in payload:
                self._pod(pod)
        elif kind == "DELETED":
            run = self.runs.get(payload["metadata"]["uid"])
            if run is not None:
                self._deleted(run)
        else:
            self._pod(payload)

    def _pod(self, pod: dict[str, Any]) -> None:
        metadata, spec = pod["metadata"], pod["spec"]
        run = self.runs.get(metadata["uid"])
        if metadata.get("deletionTimestamp"):
            if run is not None:
                self._stop_run(run, "Deleted", metadata.get("deletionGracePeriodSeconds"))
            elif spec.get("nodeName") == self.node:
                self._spawn(self._confirm_deletion(metadata["namespace"], metadata["name"]))
            return
        pending = (pod.get("status") or {}).get("phase", "Pending") == "Pending"
        if run is None and pending and spec.get("nodeName") in (None, "", self.node):
            run = PodRun(metadata["namespace"], metadata["name"], metadata["uid"], pod)
            self.runs[run.uid] = run
            self._spawn(self._run(run, bind=not spec.get("nodeName")))

    def _deleted(self, run: PodRun) -> None:
        """The Pod is gone from the API server: kill its processes, forget it."""
        self.runs.pop(run.uid, None)
        if not run.done:
            run.stopping = run.stopping or "Deleted"
            self._signal(run, signal.SIGKILL)

    # -- one Pod -----------------------------------------------------------------------------

    async def _run(self, run: PodRun, bind: bool) -> None:
        if bind and not await self._bind(run):
            self.runs.pop(run.uid, None)
            return
        if run.stopping:  # deleted before its container started: nothing to stop
            self.runs.pop(run.uid, None)
            await self._confirm_deletion(run.namespace, run.name)
            return
        run.started_at = now()
        log_path = self.directory / "logs" / f"{run.namespace}_{run.name}_{run.uid}.log"
        self.logs[(run.namespace, run.name, run.container["name"])] = log_path
        group = None
        try:
            argv, cwd, env = self._command(run)
            if self.cgroups and (limit := self._memory_limit(run)):
                group = self.cgroups.create(run.uid, limit)
                argv = ["/bin/sh", "-c", JOIN_CGROUP, str(group / "cgroup.procs"), *argv]
            with open(log_path, "wb") as output:
                run.process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (OSError, StartError) as error:
            log_path.write_text(f"{error}\n")
            if group is not None:
                self.cgroups.remove(group)
            await self._end(run, self._start_error(run, str(error)))
            return
        await self._patch_status(run, self._running(run))
        deadline = run.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            run.timers.append(
                self.loop.call_later(deadline, self._stop_run, run, "DeadlineExceeded")
            )
        code = await run.process.wait()
        self._signal(run, signal.SIGKILL)  # what the container's main process left behind
        oom = False
        if group is not None:
            oom = self.cgroups.oom_killed(group)
            await asyncio.to_thread(self.cgroups.remove, group)
        await self._end(run, self._terminated(code, run, oom))

    async def _bind(self, run: PodRun) -> bool:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": run.name, "namespace": run.namespace, "uid": run.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        try:
            await asyncio.to_thread(self.api.request, "POST", f"{run.path}/binding", binding)
        except ApiStatusError as error:
            log.info("not bound %s/%s: %s", run.namespace, run.name, error)
            return False
        return True

    async def _end(self, run: PodRun, status: dict[str, Any]) -> None:
        for timer in run.timers:
            timer.cancel()
        run.done = True
        try:
            await self._patch_status(run, status)
        except ApiStatusError as error:
            if error.status != 404:
                raise
        if run.stopping == "Deleted":
            await self._confirm_deletion(run.namespace, run.name)
            self.runs.pop(run.uid, None)

    async def _patch_status(self, run: PodRun, status: dict[str, Any]) -> None:
        body = {"metadata": {"uid": run.uid}, "status": status}
        await asyncio.to_thread(self.api.request, "PATCH", f"{run.path}/status", body)

    async def _confirm_deletion(self, namespace: str, name: str) -> None:
        """The containers are stopped: the Pod may go (a kubelet deletes it with grace 0)."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        with contextlib.suppress(ApiStatusError):
            await asyncio.to_thread(self.api.request, "DELETE", path, {"gracePeriodSeconds": 0})

    def _stop_run(self, run: PodRun, why: str, grace: float | None = None) -> None:
        """Stop the Pod's container: SIGTERM now, SIGKILL when the grace period is over."""
        if run.done or run.stopping:
            return
        run.stopping = why
        if grace is None:
            grace = run.pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        self._signal(run, signal.SIGTERM)
        run.timers.append(self.loop.call_later(grace, self._signal, run, signal.SIGKILL))

    @staticmethod
    def _signal(run: PodRun, signum: int) -> None:
        if run.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, signum)

    # -- what a container is and became -----------------------------------------------------

    def _command(self, run: PodRun) -> tuple[list[str], str, dict[str, str]]:
        container = run.container
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise StartError("no command: the simulated kubelet runs no image entrypoint")
        env = {**os.environ, "HOSTNAME": run.name}
        for variable in container.get("env") or ():
            env[variable["name"]] = str(variable.get("value", ""))
        cwd = container.get("workingDir") or str(self.directory)
        Path(cwd).mkdir(parents=True, exist_ok=True)  # as runc does
        program = argv[0]
        found = (
            str(Path(cwd, program)) if "/" in program else shutil.which(program, path=env["PATH"])
        )
        if not found or not os.access(found, os.X_OK):
            raise StartError(
                f'exec: "{program}": executable file not found in $PATH: unknown'
                if "/" not in program
                else f'exec: "{program}": stat {program}: no such file or directory: unknown'
            )
        return argv, cwd, env

    @staticmethod
    def _memory_limit(run: PodRun) -> int | None:
        limit = ((run.container.get("resources") or {}).get("limits") or {}).get("memory")
        return int(parse_quantity(limit)) if limit else None

    def _container_status(self, run: PodRun, state: dict[str, Any], ready: bool) -> dict:
        container = run.container
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"simulated://{run.uid}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
        }

    def _conditions(self, ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
        stamp = now()
        conditions = []
        for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
            condition = {"type": kind, "status": "True", "lastTransitionTime": stamp}
            if kind in ("Ready", "ContainersReady") and not ready:
                condition["status"] = "False"
                if reason:
                    condition["reason"] = reason
            conditions.append(condition)
        return conditions

    def _running(self, run: PodRun) -> dict[str, Any]:
        state = {"running": {"startedAt": run.started_at}}
        return {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": run.started_at,
            "conditions": self._conditions(True),
            "containerStatuses": [self._container_status(run, state, True)],
        }

    def _terminated(self, code: int, run: PodRun, oom: bool = False) -> dict[str, Any]:
        exit_code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        if oom:
            reason = "OOMKilled"
        elif exit_code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": run.started_at,
            "finishedAt": now(),
            "containerID": f"simulated://{run.uid}",
        }
        status = {
            "phase": "Failed" if exit_code or run.stopping == "DeadlineExceeded" else "Succeeded",
            "hostIP": "127.0.0.1",
            "startTime": run.started_at,
            "conditions": self._conditions(False, "PodCompleted"),
            "containerStatuses": [self._container_status(run, {"terminated": terminated}, False)],
        }
        if run.stopping == "DeadlineExceeded":
            status.update(reason="DeadlineExceeded", message=DEADLINE_MESSAGE)
        return status

    def _start_error(self, run: PodRun, message: str) -> dict[str, Any]:
        terminated = {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": "1970-01-01T00:00:00Z",
            "finishedAt": now(),
            "containerID": f"simulated://{run.uid}",
        }
        return {
            "phase": "Failed",
            "hostIP": "127.0.0.1",
            "startTime": run.started_at or now(),
            "conditions": self._conditions(False, "PodFailed"),
            "containerStatuses": [self._container_status(run, {"terminated": terminated}, False)],
        }


class StartError(Exception):
    """The container's command cannot be started (a container runtime's StartError)."""


# -- running it ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True, help="whose Pods this node takes")
    parser.add_argument("--node", default="simulated-node")
    parser.add_argument("--dir", required=True, help="for container logs and the TLS key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kubelet: %(message)s")
    kubelet = Kubelet(Api(args.kubeconfig), args.namespace, args.node, Path(args.dir))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, kubelet.stop)
        await kubelet.run()

    asyncio.run(serve())
    return 0


class KubeletProcess:
    """`python tests/kubelet.py ...` as a child process; `stop` ends it and its containers."""

    def __init__(self, kubeconfig: str, namespace: str, directory: Path, node: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.stderr = open(directory / "kubelet.log", "wb")  # noqa: SIM115 (open while it runs)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--kubeconfig", kubeconfig, "--namespace", namespace,
             "--node", node, "--dir", str(directory)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )  # fmt: skip
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            self.stop()
            raise RuntimeError(
                f"the simulated kubelet did not start: {(directory / 'kubelet.log').read_text()}"
            )
        ready = json.loads(line)
        self.node: str = ready["node"]
        self.port: int = ready["port"]
        #: "cgroup" when container memory limits are enforced by the kernel, else "none".
        self.memory_limits: str = ready["memory_limits"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def start_kubelet(
    kubeconfig: str, namespace: str, directory: Path, node: str = "simulated-node"
) -> KubeletProcess:
    """A simulated kubelet for `namespace`, running once its Node is registered."""
    return KubeletProcess(kubeconfig, namespace, directory, node)


if __name__ == "__main__":
    sys.exit(main())
