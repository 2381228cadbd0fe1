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
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ensemble_core.events import JobEvent

log = logging.getLogger(__name__)

Deliver = Callable[[list[JobEvent]], None]
Lost = Callable[[str], None]

#: Seconds of journal history replayed before the newest event seen, after a reconnect. Journal
#: order is not timestamp order (a `submit` carries the time job-ingest took the job, which can
#: precede events of other jobs posted before it), so the replay starts this much earlier.
REPLAY_OVERLAP = 60.0


def to_job_event(jobid: Any, event: Any) -> JobEvent:
    """A flux-python journal or eventlog event as a `JobEvent` (plain int id, own context dict).

    An event that cannot be read becomes a fatal `exception` of type `member` for its job, so
    the member ends that job alone instead of losing the stream (or the job's `clean`)."""
    try:
        return JobEvent(int(jobid), event.name, float(event.timestamp), dict(event.context or {}))
    except Exception as exc:
        note = f"the flux member could not read a Flux event of this job ({exc!r})"
        context = {"type": "member", "severity": 0, "note": note}
        return JobEvent(int(jobid), "exception", time.time(), context)


def eventlog_events(jobid: int, entries: list[dict[str, Any]]) -> list[JobEvent]:
    """A job's eventlog as the job manager answers `getattr` (RFC 18 entries, in order) as
    `JobEvent`s; an entry that cannot be read ends the job, as `to_job_event` says."""
    return [to_job_event(jobid, SimpleNamespace(**{"context": None, **e})) for e in entries]


class EventStream:
    """Reads every event of the instance; reconnects with a replay when the stream breaks.

    The first connection reads the journal live (`full=False`: Flux begins it with the events of
    the jobs active at that moment). `wait_live` returns once the job manager has answered it
    with its sentinel: from then on every job submitted is seen, so the member's `start` waits
    for it (else a job submitted and ended before the request arrived would never be reported).
    After a break it reconnects with `full=True`, from `REPLAY_OVERLAP` seconds before the newest
    event it delivered: the backlog of every job the job manager holds, then live events; the
    member drops what it already delivered. If it cannot get a live journal back within
    `give_up_after` seconds of the break, it calls `lost(reason)` once and ends.

    If the journal is refused (EPERM: a guest on a system instance) it follows each job named by
    `watch` with `event_watch_async` instead, logging one warning.
    """

    def __init__(
        self,
        flux: Any,
        connect: Callable[[], Any],
        deliver: Deliver,
        lost: Lost,
        *,
        reconnect_delay: float = 1.0,
        give_up_after: float = 60.0,
        wakeup: float = 0.05,
        batch_size: int = 512,
    ) -> None:
        self._flux = flux
        self._connect = connect
        self._deliver = deliver
        self._lost = lost
        self._reconnect_delay = reconnect_delay
        self._give_up_after = give_up_after
        self._wakeup = wakeup
        self._batch_size = batch_size
        self._closing = threading.Event()
        self._answered = threading.Event()  # the first journal request is in place
        self._live = False  # the current journal request is in place (this thread only)
        self._lock = threading.Lock()
        self._active: set[int] = set()
        self._watching = False
        self._newest = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self.reconnects = 0
        self.lost_reason: str | None = None

    @property
    def mode(self) -> str:
        return "per-job eventlog watch" if self._watching else "job journal"

    def start(self, handle: Any) -> None:
        """Begin reading on `handle`, an open handle this thread then owns."""
        self._thread = threading.Thread(
            target=self._run, args=(handle,), name="flux-member-events", daemon=True
        )
        self._thread.start()

    def wait_live(self, timeout: float) -> bool:
        """Wait until the stream sees every new job (or gave up: then `lost_reason` says why).

        Once the first request is in place, nothing is missed: a later break is followed by a
        replay of everything the job manager holds."""
        deadline = time.monotonic() + timeout
        while not self._answered.wait(0.05):
            if self.lost_reason is not None or time.monotonic() > deadline:
                return False
        return True

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

    @property
    def following(self) -> int:
        """How many jobs the stream holds on to (the member's active jobs)."""
        return len(self._active)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (it notices within `wakeup` seconds) and wait for it; once."""
        if self._closing.is_set():
            return
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
        broken_at: float | None = None
        while not self._closing.is_set():
            error: Exception | None = None
            try:
                if handle is None:
                    handle = self._connect()
                if self._watching:
                    self._follow_jobs(handle)
                else:
                    self._read_journal(handle, full)
            except OSError as exc:
                if exc.errno == errno.EPERM and not self._watching and not self._closing.is_set():
                    log.warning(
                        "the Flux job journal is refused (%s): guests of a system instance may "
                        "not read it, so each job's eventlog is followed instead (a watch per job)",
                        exc.strerror or exc,
                    )
                    with self._lock:
                        self._watching = True
                    continue
                error = exc
            except Exception as exc:  # MemberError from connect, or a flux-python surprise
                error = exc
            if self._closing.is_set():
                break
            first = self._live or broken_at is None
            if first:
                broken_at = time.monotonic()
            self._live = False
            if time.monotonic() - broken_at >= self._give_up_after:
                self._give_up(error)
                return
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "the Flux event stream broke (%s); reconnecting every %.1f s for up to %.0f s, "
                "then replaying what it missed",
                error,
                self._reconnect_delay,
                self._give_up_after,
            )
            self._closing.wait(self._reconnect_delay)
            handle = None
            full = True
            self.reconnects += 1

    def _went_live(self) -> None:
        self._live = True
        self._answered.set()

    def _give_up(self, error: Exception | None) -> None:
        self.lost_reason = (
            f"the Flux event stream broke and could not be resumed within "
            f"{self._give_up_after:.0f} s "
            f"(last error: {error}); the instance may be gone"
        )
        log.error("%s", self.lost_reason)
        self._lost(self.lost_reason)

    def _read_journal(self, handle: Any, full: bool) -> None:
        since = max(0.0, self._newest - REPLAY_OVERLAP) if full else 0.0
        consumer = self._flux.job.JournalConsumer(
            handle, full=full, since=since, include_sentinel=True
        )
        # flux-python hands out the job manager's sentinel only in full mode; the job manager
        # sends it in both. Asking for it in live mode too tells us when the request is in place.
        consumer.processing_inactive = True
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
                        if event.is_empty():
                            self._went_live()
                        else:
                            batch.append(to_job_event(event.jobid, event))
                        if len(batch) >= self._batch_size:
                            break
                        try:
                            event = consumer.poll(timeout=0)
                        except TimeoutError:
                            break
                finally:
                    if batch:
                        self._newest = max(self._newest, max(e.timestamp for e in batch))
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
                ended.intersection_update(self._active)  # forgotten jobs leave no trace
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
            self._went_live()  # each job's eventlog is read from its first event
            handle.reactor_run()
        finally:
            waker.stop()
            for future in watches.values():
                with contextlib.suppress(Exception):
                    future.cancel()
        if failure and not self._closing.is_set():
            raise failure[0]
