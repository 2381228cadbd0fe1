"""List, then watch, one kind of object (Pods or Jobs) in one namespace, by one label selector.

One watch serves every job of the ensemble. It resumes from the last resourceVersion it saw
(BOOKMARK events included) whenever the server ends the stream, and lists again when that version
has expired (410 Gone): the list is handed over whole, so the tracker can catch up on what changed
and on what was deleted meanwhile. The tracker emits each event once, so seeing an object again
after a re-list counts nothing twice.

The stream is read here, line by line, rather than through the client's `Watch`: its objects stay
plain dicts (no model is built for each of them), and `stop` can end a read blocked on a silent
stream by shutting the socket down, with every client version (`Watch.stop()` does that only
from kubernetes 36 on; before, a close waited for the next event or the end of the request).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ensemble_core.members.kubernetes_api import error_line

log = logging.getLogger(__name__)

#: Called with ("SYNC", [objects]) after a list, or ("ADDED" | "MODIFIED" | "DELETED", object).
Deliver = Callable[[str, Any], None]
#: Longest pause between attempts after the API server could not be reached.
MAX_RETRY_SECONDS = 30.0


class ApiStatusError(Exception):
    """A non-2xx answer to a list or watch request, or an ERROR event inside a watch stream.

    Carries `status` and `body` as the client's ApiException does, so one error path reads both.
    """

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def _checked(response: Any) -> Any:
    """The response, or an ApiStatusError for a non-2xx one (clients from 36 on do not raise
    themselves when the content is not preloaded)."""
    status = getattr(response, "status", 200)
    if isinstance(status, int) and not 200 <= status <= 299:
        try:
            body = response.data.decode(errors="replace")
        finally:
            response.release_conn()
        raise ApiStatusError(status, body)
    return response


def list_objects(list_call: Callable[..., Any], namespace: str, selector: str) -> tuple[list, str]:
    """The objects (as the API server sends them) and the list's resourceVersion."""
    response = _checked(list_call(namespace, label_selector=selector, _preload_content=False))
    try:
        data = json.loads(response.data)
    finally:
        response.release_conn()
    return data.get("items") or [], data["metadata"]["resourceVersion"]


def stream_lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def shut_down(response: Any) -> None:
    """End a read blocked on this response, from another thread: shut its socket down."""
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class ResourceWatch:
    """One list+watch loop, run in a thread of its own by `run`, ended by `stop`.

    If neither a list nor a watch request succeeds for `give_up_seconds`, the loop calls
    `on_lost(reason)` and ends: the member cannot know what its jobs do any more.
    """

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        namespace: str,
        selector: str,
        deliver: Deliver,
        *,
        watch_seconds: int = 300,
        give_up_seconds: float = 300.0,
        on_lost: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.kind = kind
        self._list_call = list_call
        self.namespace = namespace
        self.selector = selector
        self._deliver = deliver
        self.watch_seconds = watch_seconds
        self.give_up_seconds = give_up_seconds
        self._on_lost = on_lost
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None
        self.resource_version: str | None = None

    def list(self) -> None:
        """List every object now and hand them over; the watch goes on from this version."""
        objects, self.resource_version = list_objects(
            self._list_call, self.namespace, self.selector
        )
        self._deliver("SYNC", objects)

    def run(self) -> None:
        """Watch until stopped; list again whenever the version to resume from has expired."""
        failures = 0
        reached = time.monotonic()
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self.list()
                    reached = time.monotonic()
                self._follow()
                failures = 0
                reached = time.monotonic()
            except Exception as error:  # ApiStatusError, urllib3 and socket errors alike
                if self._stopped.is_set():
                    break
                if getattr(error, "status", None) == 410:
                    log.info(
                        "%s watch: resourceVersion expired (410 Gone); listing again", self.kind
                    )
                    self.resource_version = None
                    reached = time.monotonic()
                    continue
                away = time.monotonic() - reached
                if away >= self.give_up_seconds:
                    self._on_lost(
                        f"the Kubernetes {self.kind} watch in namespace '{self.namespace}' could "
                        f"not be resumed for {away:.0f} s (last error: {error_line(error)})"
                    )
                    return
                failures += 1
                log.warning("%s watch: %s; retrying", self.kind, error_line(error))
                pause = min(MAX_RETRY_SECONDS, 2.0**failures, self.give_up_seconds - away)
                self._stopped.wait(max(0.1, pause))

    def stop(self) -> None:
        """End the loop now, also when its read is blocked on a silent stream."""
        self._stopped.set()
        with self._lock:
            if self._response is not None:
                shut_down(self._response)

    def _follow(self) -> None:
        response = _checked(
            self._list_call(
                self.namespace,
                label_selector=self.selector,
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_seconds,
                # A connection that dies without a word would otherwise block the read for ever.
                _request_timeout=self.watch_seconds + 30,
                _preload_content=False,
            )
        )
        with self._lock:
            self._response = response
        try:
            if self._stopped.is_set():
                return
            for line in stream_lines(response):
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise ApiStatusError(obj.get("code") or 500, json.dumps(obj))
                self.resource_version = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self._deliver(event["type"], obj)
                if self._stopped.is_set():
                    return
        finally:
            with self._lock:
                self._response = None
            with contextlib.suppress(Exception):
                response.close()  # a stream not read to its end must not go back to the pool
                response.release_conn()
