"""A real Kubernetes control plane with the simulated kubelet, for tests, benchmarks and recordings.

`$ENSEMBLE_K8S_CONTROL_PLANE` names the `control-plane` script (`.ci/run` sets it from
../shared/k8s when that is there); without it `control_plane_script()` is None and the callers
skip, saying why. `Cluster.start` starts the control plane in a directory, makes a namespace and
starts a simulated kubelet for it (tests/kubelet.py); `Cluster.stop` stops both.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubelet import HttpsServer, KubeletProcess, QuietHandler, start_kubelet
from kubernetes import client, config, utils

from ensemble_core.translate.kubernetes import ENSEMBLE_LABEL

ENV = "ENSEMBLE_K8S_CONTROL_PLANE"
SKIP_REASON = (
    f"no Kubernetes control plane: set {ENV} to the control-plane script "
    "(.ci/run sets it from ../shared/k8s/control-plane)"
)
#: Makes the API server forget old resourceVersions within seconds, so watches meet 410 Gone.
#: Starts of the control plane tried when a server lost its port to another process.
START_ATTEMPTS = 3
COMPACTING = "--watch-cache-sizes=pods#0,jobs.batch#0 --etcd-compaction-interval=10s"


def control_plane_script() -> str | None:
    """The control-plane script named by the environment, if it is there."""
    script = os.environ.get(ENV)
    return script if script and os.access(script, os.X_OK) else None


def unpacked_binaries(script: str) -> Path:
    """The control plane's binaries, unpacked once into the user's cache (about 180 MB) and
    linked from each control plane's directory, rather than unpacked into each (seconds of CPU
    per start). Keyed by the packed files' size and time, so a new control plane unpacks anew."""
    packed = sorted((Path(script).parent / "bin").glob("*.xz"))
    key = hashlib.sha256(
        repr([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in packed]).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "ensemble-executors" / f"control-plane-{key}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=target.parent))
        for source in packed:
            with open(building / source.stem, "wb") as binary:
                subprocess.run(["xz", "-dc", str(source)], stdout=binary, check=True)
            (building / source.stem).chmod(0o755)
        try:
            building.rename(target)  # atomic: a session unpacking at the same time loses
        except OSError:
            shutil.rmtree(building)
    return target


class Cluster:
    """A control plane in `directory`, one namespace and a simulated kubelet serving it."""

    def __init__(
        self,
        directory: Path,
        namespace: str,
        apiserver_args: str = "",
    ) -> None:
        self.directory = directory
        self.namespace = namespace
        self.apiserver_args = apiserver_args
        self.kubeconfig = str(directory / "kubeconfig")
        self.kubelet: KubeletProcess | None = None
        self._started = False

    def start(self) -> Cluster:
        script = control_plane_script()
        if script is None:
            raise RuntimeError(SKIP_REASON)
        env = {**os.environ, "APISERVER_ARGS": self.apiserver_args}
        (self.directory / "bin").mkdir(parents=True, exist_ok=True)
        for binary in unpacked_binaries(script).iterdir():
            (self.directory / "bin" / binary.name).symlink_to(binary)
        self._started = True
        for attempt in range(1, START_ATTEMPTS + 1):
            result = subprocess.run(
                [script, "start", str(self.directory)], env=env, capture_output=True, text=True
            )
            if result.returncode == 0:
                break
            if attempt == START_ATTEMPTS or not self._lost_a_port():
                raise RuntimeError(f"the control plane did not start: {result.stderr.strip()}")
        self.api = config.new_client_from_config(config_file=self.kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        if self.namespace not in {n.metadata.name for n in self.core.list_namespace().items}:
            self.core.create_namespace({"metadata": {"name": self.namespace}})
        self._wait_for_default_service_account()
        self.kubelet = start_kubelet(self.kubeconfig, self.namespace, self.directory / "kubelet")
        return self

    def _lost_a_port(self) -> bool:
        """Whether a server of the control plane found the port it was given taken: the script
        picks free ports before the servers bind them, and another process may take one in
        between. Starting again picks new ones."""
        return any(
            "address already in use" in log.read_text(errors="replace")
            for log in self.directory.glob("*.log")
        )

    def begin_stop(self) -> subprocess.Popen | None:
        """Stop the kubelet (and its containers) now, and the control plane in the background
        (it takes seconds): wait for the process returned."""
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        if not self._started:
            return None
        self._started = False
        return subprocess.Popen(
            [control_plane_script() or "", "stop", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        stopping = self.begin_stop()
        if stopping is not None:
            stopping.wait()

    def _wait_for_default_service_account(self) -> None:
        """Pods cannot be created in a namespace before its `default` ServiceAccount exists."""
        for _ in range(100):
            accounts = self.core.list_namespaced_service_account(self.namespace).items
            if any(account.metadata.name == "default" for account in accounts):
                return
            time.sleep(0.1)
        raise RuntimeError(f"no default ServiceAccount in {self.namespace} after 10 s")

    # -- what tests read and make --------------------------------------------------------------

    def objects(self, kind: str, selector: str) -> list[Any]:
        """The Jobs or Pods ("jobs" | "pods") of the namespace with these labels."""
        if kind == "jobs":
            return self.batch.list_namespaced_job(self.namespace, label_selector=selector).items
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def delete_jobs(self, selector: str) -> None:
        """Delete these Jobs and their Pods (one request), as a test's cleanup."""
        self.batch.delete_collection_namespaced_job(
            self.namespace, label_selector=selector, propagation_policy="Background"
        )

    def apply(self, path: Path) -> None:
        """Create the objects of a YAML file in the namespace, as `kubectl create -f` does."""
        utils.create_from_yaml(self.api, str(path), namespace=self.namespace)

    def token(self, account: str) -> str:
        """A token for a ServiceAccount of the namespace, from the API server (TokenRequest)."""
        request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
        answer = self.core.create_namespaced_service_account_token(account, self.namespace, request)
        return answer.status.token

    def kubeconfig_for(self, token: str, path: Path) -> str:
        """A kubeconfig that reaches this API server with `token`, in the namespace."""
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        cluster = admin["clusters"][0]["cluster"]
        ca = Path(cluster["certificate-authority"]).read_bytes()
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": cluster["server"],
                        "certificate-authority-data": base64.b64encode(ca).decode(),
                    },
                }
            ],
            "users": [{"name": "account", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "account",
                    "context": {"cluster": "local", "user": "account", "namespace": self.namespace},
                }
            ],
            "current-context": "account",
        }
        path.write_text(yaml.safe_dump(document))
        return str(path)


class RefusingWebhook:
    """A validating admission webhook of the real API server that refuses chosen operations on
    chosen Jobs with a chosen status, as an API server in trouble answers (a 500 on one create).

    Only the Jobs labelled with `ensemble_id` go through it, so the rest of the session does not
    see it; it is removed on leaving the `with` block.
    """

    NAME = "refuse.ensemble.test"
    PROBE = "webhook-probe"

    def __init__(
        self,
        cluster: Cluster,
        directory: Path,
        ensemble_id: str,
        refusals: dict[tuple[str, str], tuple[int, str]],
    ) -> None:
        self.cluster = cluster
        self.ensemble_id = ensemble_id
        refused = {**refusals, ("CREATE", self.PROBE): (418, "the webhook is on")}

        class Review(QuietHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                name = request.get("name") or request["object"]["metadata"]["name"]
                refusal = refused.get((request["operation"], name))
                response: dict[str, Any] = {"uid": request["uid"], "allowed": refusal is None}
                if refusal is not None:
                    response["status"] = {"code": refusal[0], "message": refusal[1]}
                review = {**review, "response": response}
                self.answer(200, json.dumps(review).encode(), "application/json")

        self.server = HttpsServer(directory, Review)

    def __enter__(self) -> RefusingWebhook:
        self.server.start()
        webhook = {
            "name": self.NAME,
            "clientConfig": {
                "url": f"https://127.0.0.1:{self.server.port}/",
                "caBundle": base64.b64encode(self.server.cert.read_bytes()).decode(),
            },
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "DELETE"],
                    "resources": ["jobs"],
                    "scope": "Namespaced",
                }
            ],
            "objectSelector": {"matchLabels": {ENSEMBLE_LABEL: self.ensemble_id}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }
        self.admission = client.AdmissionregistrationV1Api(self.cluster.api)
        self.admission.create_validating_webhook_configuration(
            {"metadata": {"name": self.NAME}, "webhooks": [webhook]}
        )
        self._wait_until_on()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.admission.delete_validating_webhook_configuration(self.NAME)
        self.server.stop()

    def _wait_until_on(self) -> None:
        """The API server reads webhook configurations from a watch: refused probes say when."""
        probe = {
            "metadata": {"name": self.PROBE, "labels": {ENSEMBLE_LABEL: self.ensemble_id}},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "probe", "image": "none", "command": ["true"]}],
                    }
                }
            },
        }
        for _ in range(100):
            try:
                self.cluster.batch.create_namespaced_job(
                    self.cluster.namespace, probe, dry_run="All"
                )
            except client.ApiException as error:
                if error.status == 418:
                    return
                raise
            time.sleep(0.1)
        raise RuntimeError("the admission webhook was not called within 10 s")
