"""List, then watch, one kind of object (Pods or Jobs) in one namespace, by one label selector.

One watch serves every job of the ensemble. It resumes from the last resourceVersion it saw
(BOOKMARK events included) whenever the server ends the stream, and lists again when that version
has expired (410 Gone): the list is handed over whole, so the tracker can catch up on what changed
and on what was deleted meanwhile. The tracker emits each event once, so seeing an object again
after a re-list counts nothing twice.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Called with ("SYNC", [objects]) after a list, or ("ADDED" | "MODIFIED" | "DELETED", object).
Deliver = Callable[[str, Any], None]
#: Longest pause between attempts after the API server could not be reached.
MAX_RETRY_SECONDS = 30.0


def list_objects(list_call: Callable[..., Any], namespace: str, selector: str) -> tuple[list, str]:
    """The objects (as the API server sends them) and the list's resourceVersion."""
    response = list_call(namespace, label_selector=selector, _preload_content=False)
    try:
        data = json.loads(response.data)
    finally:
        response.release_conn()
    return data.get("items") or [], data["metadata"]["resourceVersion"]


class ResourceWatch:
    """One list+watch loop, run in a thread of its own by `run`, ended by `stop`."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Any],
        namespace: str,
        selector: str,
        deliver: Deliver,
        watch: Any,
        *,
        watch_seconds: int = 300,
    ) -> None:
        self.kind = kind
        self._list_call = list_call
        self.namespace = namespace
        self.selector = selector
        self._deliver = deliver
        self._watch = watch
        self.watch_seconds = watch_seconds
        self._stopped = threading.Event()
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
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self.list()
                self._follow()
                failures = 0
            except Exception as error:  # ApiException, urllib3 and socket errors alike
                if getattr(error, "status", None) == 410:
                    log.info(
                        "%s watch: resourceVersion expired (410 Gone); listing again", self.kind
                    )
                    self.resource_version = None
                    continue
                if self._stopped.is_set():
                    break
                failures += 1
                log.warning("%s watch: %s; retrying", self.kind, error)
                self._stopped.wait(min(MAX_RETRY_SECONDS, 2.0**failures))

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()

    def _follow(self) -> None:
        stream = self._watch.stream(
            self._list_call,
            self.namespace,
            label_selector=self.selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_seconds,
            # A connection that dies without a word would otherwise block the read for ever.
            _request_timeout=self.watch_seconds + 30,
        )
        for event in stream:
            obj = event["raw_object"]
            self.resource_version = obj["metadata"]["resourceVersion"]
            if event["type"] != "BOOKMARK":
                self._deliver(event["type"], obj)
            if self._stopped.is_set():
                return
