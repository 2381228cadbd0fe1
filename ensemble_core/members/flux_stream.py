"""The Flux member's event stream: one thread reads the job journal (guests: per-job eventlogs).

Flux handles are not thread-safe, so the thread owns a handle of its own that nothing else touches.
It converts Flux events to `JobEvent`s and hands them over in batches through `deliver`, which must
be safe to call from this thread (the member passes a `loop.call_soon_threadsafe` wrapper). It does
not filter or deduplicate: the member does that on its loop, where it knows which jobs are its own.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent

log = logging.getLogger(__name__)

Deliver = Callable[[list[JobEvent]], None]


def to_job_event(jobid: int, event: Any) -> JobEvent:
    """A flux-python journal or eventlog event as a `JobEvent` (plain int id, own context dict)."""
    return JobEvent(int(jobid), event.name, float(event.timestamp), dict(event.context or {}))


class EventStream:
    """Reads every event of the instance and reconnects with a full replay when the stream breaks.

    The first connection reads the journal live (`full=False`: Flux still starts it with the events
    of active jobs, so nothing submitted after `start` is missed). After a break it reconnects with
    `full=True, include_sentinel=True`: the backlog of every job the job manager still holds, then
    the sentinel, then live events; the member drops what it already delivered. If the journal is
    refused (EPERM: a guest on a system instance) it follows each job named by `watch` with
    `event_watch_async` instead, logging one warning.
    """

    def __init__(
        self,
        flux: Any,
        connect: Callable[[], Any],
        deliver: Deliver,
        *,
        reconnect_delay: float = 1.0,
        wakeup: float = 0.05,
        batch_size: int = 512,
    ) -> None:
        self._flux = flux
        self._connect = connect
        self._deliver = deliver
        self._reconnect_delay = reconnect_delay
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._active: set[int] = set()
        self._watching = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self.reconnects = 0

    @property
    def mode(self) -> str:
        return "per-job eventlog watch" if self._watching else "job journal"

    def start(self, handle: Any) -> None:
        """Begin reading on `handle`, an open handle this thread then owns."""
        self._thread = threading.Thread(
            target=self._run, args=(handle,), name="flux-member-events", daemon=True
        )
        self._thread.start()

    def watch(self, jobid: int) -> None:
        """Note a job of the member; followed one by one only when the journal is refused."""
        with self._lock:
            self._active.add(jobid)
            if self._watching:
                self._wake()

    def forget(self, jobid: int) -> None:
        """The job is over (its `clean` was delivered): do not follow it again after a reconnect."""
        with self._lock:
            self._active.discard(jobid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (it notices within `wakeup` seconds) and wait for it."""
        self._closing.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the Flux event thread did not stop within %.0f s", timeout)
                return
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        """Wake the reactor of guest mode; a full pipe already holds a wake-up."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"w")

    def _run(self, handle: Any) -> None:
        full = False
        while not self._closing.is_set():
            try:
                if handle is None:
                    handle = self._connect()
                if self._watching:
                    self._follow_jobs(handle)
                else:
                    self._read_journal(handle, full)
            except OSError as exc:
                if self._closing.is_set():
                    break
                if exc.errno == errno.EPERM and not self._watching:
                    log.warning(
                        "the Flux job journal is refused (%s): guests of a system instance may "
                        "not read it, so each job's eventlog is followed instead (a watch per job)",
                        exc.strerror or exc,
                    )
                    with self._lock:
                        self._watching = True
                    continue
                log.warning(
                    "the Flux event stream broke (%s); reconnecting in %.1f s and replaying",
                    exc,
                    self._reconnect_delay,
                )
                self._closing.wait(self._reconnect_delay)
            except MemberError as exc:
                log.warning("%s; trying again in %.1f s", exc, self._reconnect_delay)
                self._closing.wait(self._reconnect_delay)
            except Exception:
                log.exception("the Flux event stream failed; reconnecting")
                self._closing.wait(self._reconnect_delay)
            if self._closing.is_set():
                break
            handle = None
            full = True
            self.reconnects += 1

    def _read_journal(self, handle: Any, full: bool) -> None:
        consumer = self._flux.job.JournalConsumer(handle, full=full, include_sentinel=full)
        consumer.start()
        try:
            while not self._closing.is_set():
                try:
                    event = consumer.poll(timeout=self._wakeup)
                except TimeoutError:
                    continue
                batch: list[JobEvent] = []
                try:
                    while event is not None:
                        if not event.is_empty():
                            batch.append(to_job_event(event.jobid, event))
                        if len(batch) >= self._batch_size:
                            break
                        try:
                            event = consumer.poll(timeout=0)
                        except TimeoutError:
                            break
                finally:
                    if batch:
                        self._deliver(batch)  # also what was read before the stream broke
                if event is None:
                    raise OSError(errno.ENODATA, "the job journal stream ended")
        finally:
            with contextlib.suppress(Exception):
                consumer.stop()

    def _follow_jobs(self, handle: Any) -> None:
        """Guest mode: one `event_watch_async` per active job, driven by this thread's reactor."""
        watches: dict[int, Any] = {}
        ended: set[int] = set()  # eventlogs that ended before the member forgot their job
        failure: list[BaseException] = []

        def add_new() -> None:
            with self._lock:
                new = self._active - watches.keys() - ended
            for jobid in sorted(new):
                future = self._flux.job.event_watch_async(handle, jobid)
                watches[jobid] = future
                future.then(on_event, jobid)

        def on_wake(h: Any, _watcher: Any, fd: int, _revents: int, _args: Any) -> None:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
            try:
                if self._closing.is_set():
                    h.reactor_stop()
                else:
                    add_new()
            except Exception as exc:
                failure.append(exc)
                h.reactor_stop()

        def on_event(future: Any, jobid: int) -> None:
            try:
                event = future.get_event()
            except Exception as exc:
                failure.append(exc)
                handle.reactor_stop()
                return
            if event is None:
                watches.pop(jobid, None)
                ended.add(jobid)
            else:
                self._deliver([to_job_event(jobid, event)])

        waker = handle.fd_watcher_create(
            self._wake_r, on_wake, events=self._flux.constants.FLUX_POLLIN
        )
        waker.start()
        try:
            add_new()
            handle.reactor_run()
        finally:
            waker.stop()
            for future in watches.values():
                with contextlib.suppress(Exception):
                    future.cancel()
        if failure and not self._closing.is_set():
            raise failure[0]
