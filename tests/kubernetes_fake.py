"""A scripted Kubernetes API server behind the official client's `ApiClient.call_api`.

Everything above the HTTP call is the real client: its parameter validation, URL building,
deserialization, `kubernetes.watch.Watch` (which raises ApiException(410) on an ERROR event when a
timeout is set). Each watch request gets the next scripted stream of JSON lines for its resource;
a stream may first wait for a named happening ("create-job", "create-<name>", "delete-job",
"list-pods-2", ...),
and a request with no script left gets an idle stream that ends when the watch is stopped. When the
n-th watch of a resource has sent its lines, "watch-<resource>-<n>-done" happens.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import rest

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
REASONS = {
    200: "OK",
    201: "Created",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
}


def fixture_lines(name: str) -> list[str]:
    """The lines of a recorded stream under tests/fixtures/kubernetes."""
    return (FIXTURES / name).read_text().splitlines()


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeResponse:
    """What the client reads of a urllib3 response, a streamed one included."""

    def __init__(self, status, body=None, lines=(), wait_for=None, cluster=None, done=None):
        self.status = status
        self.reason = REASONS.get(status, "Error")
        if isinstance(body, str):
            self.data, content_type = body.encode(), "text/plain"
        else:
            self.data, content_type = json.dumps(body).encode(), "application/json"
        self.headers = {"content-type": content_type}
        self._lines = list(lines)
        self._wait_for = wait_for
        self._cluster = cluster
        self._done = done
        self._closed = threading.Event()
        self.connection = self
        self.sock = self

    def stream(self, amt=None, decode_content=False):
        if self._wait_for and not self._cluster.wait(self._wait_for):
            return
        for line in self._lines:
            if self._closed.is_set():
                return
            yield (line + "\n").encode()
        if self._done:
            self._cluster.happen(self._done)
        if self._cluster is not None and not self._lines:
            self._closed.wait(10)

    def shutdown(self, how: int) -> None:
        """Watch.stop() shuts the socket down to end a blocked read."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()

    def release_conn(self) -> None:
        pass


class FakeCluster:
    """One namespace's worth of API server, scripted per test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.watches: dict[str, list[tuple[list[str], str | None]]] = defaultdict(list)
        self.lists: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.job_pods: dict[str, list[dict[str, Any]]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, str] = {}
        self.miniclusters: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.watch_failures: dict[str, tuple[int, str, str]] = {}
        self._happened: dict[str, threading.Event] = defaultdict(threading.Event)
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    # -- scripting ----------------------------------------------------------------------------

    def add_watch(self, resource: str, lines: list[str], wait_for: str | None = "create-job"):
        """The next watch request on `resource` streams these lines, once `wait_for` happened."""
        self.watches[resource].append((lines, wait_for))

    def add_list(self, resource: str, items: list[dict[str, Any]], version: str) -> None:
        kind = {"pods": "PodList", "jobs": "JobList"}[resource]
        api = {"pods": "v1", "jobs": "batch/v1"}[resource]
        self.lists[resource].append(
            {
                "kind": kind,
                "apiVersion": api,
                "metadata": {"resourceVersion": version},
                "items": items,
            }
        )

    def fail(self, method: str, resource: str, code: int, reason: str, message: str) -> None:
        self.failures[(method, resource)] = (code, reason, message)

    def fail_watches(self, resource: str, code: int, reason: str, message: str) -> None:
        """Every watch request on `resource` from now on is answered with this error."""
        self.watch_failures[resource] = (code, reason, message)

    def happen(self, name: str) -> None:
        self._happened[name].set()

    def wait(self, name: str, timeout: float = 10.0) -> bool:
        return self._happened[name].wait(timeout)

    def watch_calls(self, resource: str) -> list[dict[str, str]]:
        return [q for m, r, q, _ in self.calls if m == "GET" and r == resource and "watch" in q]

    def list_calls(self, resource: str) -> list[dict[str, str]]:
        return [q for m, r, q, _ in self.calls if m == "GET" and r == resource and "watch" not in q]

    def requests(self, method: str, resource: str) -> list[Any]:
        return [body for m, r, _, body in self.calls if m == method and r == resource]

    # -- the server -----------------------------------------------------------------------

    def call_api(
        self, api_client, method, url, header_params=None, body=None, post_params=None, **_
    ):
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        resource = self._resource(segments)
        self.calls.append((method, resource, query, body))
        failure = self.failures.get((method, resource))
        if "watch" in query and resource in self.watch_failures:
            failure = self.watch_failures[resource]
        if failure is not None:
            code, reason, message = failure
            return rest.RESTResponse(FakeResponse(code, status_body(code, reason, message)))
        response = self._answer(method, resource, segments, query, body, header_params or {})
        return rest.RESTResponse(response)

    @staticmethod
    def _resource(segments: list[str]) -> str:
        """ "pods", "jobs", "job", "log", "minicluster": what a path names."""
        index = segments.index("namespaces") + 2
        rest_of_path = segments[index:]
        if rest_of_path[-1] == "log":
            return "log"
        if rest_of_path[0] == "miniclusters":
            return "minicluster"
        return rest_of_path[0] if len(rest_of_path) == 1 else rest_of_path[0][:-1]

    def _answer(self, method, resource, segments, query, body, headers) -> FakeResponse:
        name = segments[-1]
        if resource in ("pods", "jobs") and method == "GET":
            if "watch" in query:
                return self._watch(resource)
            selector = query.get("labelSelector", "")
            if selector.startswith("job-name="):
                items = self.job_pods.get(selector.split("=", 1)[1], [])
                return FakeResponse(200, {"metadata": {"resourceVersion": "2000"}, "items": items})
            return self._list(resource)
        if resource == "jobs" and method == "POST":
            created = dict(body)
            created["metadata"] = {**body["metadata"], "uid": "uid-1", "resourceVersion": "1000"}
            self.happen("create-job")
            self.happen(f"create-{body['metadata']['name']}")
            return FakeResponse(201, created)
        if resource == "job" and method == "DELETE":
            self.happen("delete-job")
            return FakeResponse(200, status_body(200, "", "") | {"status": "Success"})
        if resource == "job" and method == "GET":
            if name in self.jobs:
                return FakeResponse(200, self.jobs[name])
            return FakeResponse(404, status_body(404, "NotFound", f'jobs.batch "{name}" not found'))
        if resource == "log":
            return FakeResponse(200, self.logs.get(segments[-2], ""))
        if resource == "minicluster":
            key = (segments[segments.index("namespaces") + 1], name)
            if key not in self.miniclusters:
                message = f'miniclusters.flux-framework.org "{name}" not found'
                return FakeResponse(404, status_body(404, "NotFound", message))
            if method == "PATCH":
                assert headers.get("Content-Type") == "application/merge-patch+json"
                self.miniclusters[key]["spec"].update(body["spec"])
            return FakeResponse(200, self.miniclusters[key])
        raise AssertionError(f"unexpected request {method} {'/'.join(segments)}")

    def _list(self, resource: str) -> FakeResponse:
        with self._lock:
            self._counts[f"list-{resource}"] += 1
            count = self._counts[f"list-{resource}"]
            scripted = self.lists[resource].pop(0) if self.lists[resource] else None
        if scripted is None:
            scripted = {"metadata": {"resourceVersion": "990"}, "items": []}
        response = FakeResponse(200, scripted)
        self.happen(f"list-{resource}-{count}")
        return response

    def _watch(self, resource: str) -> FakeResponse:
        with self._lock:
            self._counts[f"watch-{resource}"] += 1
            done = f"watch-{resource}-{self._counts[f'watch-{resource}']}-done"
            script = self.watches[resource].pop(0) if self.watches[resource] else None
        if script is None:
            return FakeResponse(200, None, (), cluster=self)
        lines, wait_for = script
        return FakeResponse(200, None, lines, wait_for=wait_for, cluster=self, done=done)
