"""Reaching the Kubernetes API: the lazily imported client, its configuration, clear errors.

Also the MiniCluster resize rule, as the ensemble-operator applies it: the new `spec.size` stays
within `spec.minSize` (at least 1) and `spec.maxSize` (the Flux Operator takes the size the
MiniCluster was created with when maxSize is unset, and refuses to grow past it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from ensemble_core.errors import MemberError

INSTALL_HINT = "pip install 'ensemble-executors[kubernetes]'"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
RBAC_HINT = (
    "give the account the Role and RoleBinding of docs/kubernetes.md "
    "(kubectl apply -n {namespace} -f examples/kubernetes/rbac.yaml)"
)
#: The Flux Operator's MiniCluster custom resource.
MINICLUSTER = {"group": "flux-framework.org", "version": "v1alpha2", "plural": "miniclusters"}


def import_kubernetes() -> ModuleType:
    """The official client, imported on first use, or a MemberError saying what to install."""
    try:
        import kubernetes
        import kubernetes.client
        import kubernetes.config
    except ImportError as error:
        raise MemberError(
            f"the kubernetes member needs the official Kubernetes client ({error}). {INSTALL_HINT}"
        ) from None
    return kubernetes


def connect(k8s: ModuleType, kubeconfig: str | None, context: str | None) -> tuple[Any, str | None]:
    """An API client, from a kubeconfig file or the Pod's service account, and its namespace.

    Like the client's own `load_config`: the named file, else $KUBECONFIG or ~/.kube/config if
    present, else the in-cluster service account.
    """
    configuration = k8s.client.Configuration()
    if kubeconfig:
        if not Path(kubeconfig).expanduser().is_file():
            raise MemberError(
                f"the kubeconfig file {kubeconfig} does not exist. "
                "Fix the kubeconfig setting (--kubeconfig) or leave it out to use ~/.kube/config"
            )
        return _from_kubeconfig(k8s, configuration, str(Path(kubeconfig).expanduser()), context)
    candidates = os.environ.get("KUBECONFIG") or "~/.kube/config"
    found = [
        str(Path(path).expanduser())
        for path in candidates.split(os.pathsep)
        if path and Path(path).expanduser().is_file()
    ]
    if found:
        return _from_kubeconfig(k8s, configuration, os.pathsep.join(found), context)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            k8s.config.load_incluster_config(client_configuration=configuration)
        except k8s.config.ConfigException as error:
            raise MemberError(
                f"running in a Kubernetes Pod, but its service account cannot be used ({error}). "
                "Mount the service account token (automountServiceAccountToken: true)"
            ) from None
        namespace = NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.is_file() else None
        return k8s.client.ApiClient(configuration), namespace
    raise MemberError(
        "no Kubernetes configuration: no kubeconfig file ($KUBECONFIG or ~/.kube/config) and not "
        "running in a cluster. Set the kubeconfig setting (--kubeconfig PATH), or run the "
        "ensemble in a Pod with a service account"
    )


def _from_kubeconfig(
    k8s: ModuleType, configuration: Any, path: str, context: str | None
) -> tuple[Any, str | None]:
    try:
        k8s.config.load_kube_config(
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        contexts, current = k8s.config.list_kube_config_contexts(path)
    except (k8s.config.ConfigException, OSError, ValueError, KeyError, TypeError) as error:
        raise MemberError(
            f"cannot use the kubeconfig {path}: {error}. "
            "Check the file (kubectl config view) and the context setting"
        ) from None
    active = next((c for c in contexts if c.get("name") == context), None) if context else current
    namespace = ((active or {}).get("context") or {}).get("namespace")
    return k8s.client.ApiClient(configuration), namespace


def api_message(error: BaseException) -> str:
    """What the API server said: the Status message of an ApiException, else the error itself."""
    body = getattr(error, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(error, "reason", None) or error)


def error_line(error: BaseException, limit: int = 300) -> str:
    """A failed call in one line for a log: the status and the API server's message, never the
    whole HTTP response (an ApiException's text holds its headers and body)."""
    status = getattr(error, "status", None)
    lines = api_message(error).strip().splitlines() or [type(error).__name__]
    message = lines[0] if len(lines[0]) <= limit else lines[0][:limit] + "..."
    return f"{status} {message}" if status else message


def api_error(error: BaseException, action: str, namespace: str) -> MemberError:
    """A MemberError for a failed call: what was refused, why, and the fix."""
    status = getattr(error, "status", None)
    message = api_message(error)
    if status == 401:
        return MemberError(
            f"the Kubernetes API server refused the credentials ({message}). "
            "Renew them in the kubeconfig (log in again) or fix the context setting"
        )
    if status == 403:
        return MemberError(
            f"forbidden to {action} in namespace '{namespace}' ({message}). "
            + RBAC_HINT.format(namespace=namespace)
            + ", or choose another namespace"
        )
    if status is None:
        return MemberError(
            f"cannot reach the Kubernetes API server to {action} ({message}). "
            "Check that the cluster is up and the kubeconfig's server address"
        )
    return MemberError(f"cannot {action} in namespace '{namespace}': {status} {message}")


def minicluster_ref(setting: str, namespace: str) -> tuple[str, str]:
    """("namespace", "name") for a `minicluster` setting of "name" or "namespace/name"."""
    space, _, name = setting.rpartition("/")
    if not name:
        raise MemberError(
            f"minicluster '{setting}' names no MiniCluster: use NAME or NAMESPACE/NAME"
        )
    return space or namespace, name


def resize_target(minicluster: dict[str, Any], change: int) -> tuple[int, int, int, int]:
    """(current size, new size, min, max) for growing by `change` nodes (negative shrinks)."""
    spec = minicluster.get("spec") or {}
    size = int(spec.get("size") or 1)
    low = max(1, int(spec.get("minSize") or 1))
    high = int(spec.get("maxSize") or (minicluster.get("status") or {}).get("maximumSize") or size)
    return size, min(high, max(low, size + change)), low, high
