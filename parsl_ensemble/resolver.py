"""The thread that resolves the executor's Futures, off the controller's thread.

A Future's resolution runs Parsl's DataFlowKernel callbacks (its logging, dependent apps) and
reads the job's result: work that must not hold up the controller's event loop, so the
controller's thread only hands each ended job over. A ThreadPoolExecutor did that hand-over
with a Future, a work item and their locks per job, which took a quarter of the controller's
own CPU per warm task on this project's 2-core test machine; a `queue.SimpleQueue` (in C, one
lock) and one thread draining it do the same in the same order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_STOP = object()


class Resolver:
    """Calls `resolve(*item)` for each item `put`, one at a time in order, on a thread of its
    own started at the first item; `shutdown` waits for the items put before it."""

    def __init__(self, name: str, resolve: Callable[..., None]) -> None:
        self.name = name
        self._resolve = resolve
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, *item: Any) -> None:
        """Hand an item over (any thread)."""
        if self._thread is None:
            self._start()
        self._queue.put(item)

    def shutdown(self) -> None:
        """Resolve what was put, then end the thread."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                # A daemon: a script that never shuts its executor down must still exit.
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        get = self._queue.get
        while (item := get()) is not _STOP:
            try:
                self._resolve(*item)
            except Exception:  # one job's trouble must not stop the others' resolution
                log.exception("%s: resolving a job's Future failed", self.name)
