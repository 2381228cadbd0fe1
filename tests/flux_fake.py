"""flux-python faked at its boundary, replaying journals recorded on a real Flux 0.88.0 instance.

Only what the Flux member calls exists: `flux.Flux(uri)`, a handle's `attr_get`, `rpc` (resource
drain/undrain/status, and `job-info.lookup` of a recorded output eventlog),
`fd_watcher_create`, `reactor_run`, `reactor_stop`; `flux.job.submit_async`, `JournalConsumer`,
`event_watch_async`, `cancel_async`; `flux.constants.FLUX_POLLIN`. Errors are raised as flux-python
raises them (OSError subclasses with an errno and Flux's text).

`Emitted` collects what a member emits, for these tests and those on a real instance.

The instance posts a recorded event only once its job was submitted (and the recorded cancel
only once the job was cancelled), so events may reach the member before `submit_async`'s id does,
as they can on a real instance.
"""

from __future__ import annotations

import asyncio
import errno
import json
import select
import sys
import threading
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

from ensemble_core.events import AttemptRecord, JobEvent

FIXTURES = Path(__file__).parent / "fixtures" / "flux"


class Emitted:
    """What a member emitted, per job, and its log paths as they stood at each job's `clean`
    (a member keeps them until then). The `emit` to give the member's `start`; used on the
    fake and on real instances alike."""

    def __init__(self, member: Any) -> None:
        self.member = member
        self.events: dict[int, list[JobEvent]] = defaultdict(list)
        self.cleaned: set[int] = set()
        self.logs: dict[int, list[str]] = {}

    def emit(self, event: JobEvent) -> None:
        self.events[event.jobid].append(event)
        if event.name == "clean":
            self.cleaned.add(event.jobid)
            self.logs[event.jobid] = self.member.log_paths(event.jobid)

    def record(self, jobid: int) -> AttemptRecord:
        attempt = AttemptRecord()
        for event in self.events[jobid]:
            attempt.observe(event)
        return attempt

    def delivered(self, jobid: int) -> list[tuple[str, float]]:
        return [(e.name, e.timestamp) for e in self.events[jobid]]

    async def until_clean(self, jobids: list[int], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while not self.cleaned >= set(jobids):
                await asyncio.sleep(0.005)


SENTINEL = {"sentinel": True}


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def repeat(lines: list[dict[str, Any]], copies: int) -> list[dict[str, Any]]:
    """The recorded jobs `copies` times over, each copy with fresh ids and later timestamps."""
    span = max(r["timestamp"] for r in lines) - min(r["timestamp"] for r in lines) + 1.0
    return [
        {**r, "id": r["id"] + copy * 10**12, "timestamp": r["timestamp"] + copy * span}
        for copy in range(copies)
        for r in lines
    ]


class Event:
    """What `JournalConsumer.poll` and `JobEventWatchFuture.get_event` return."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.jobid = record.get("id", -1)
        self.name = record.get("name")
        self.timestamp = record.get("timestamp", 0.0)
        self.context = record.get("context", {})

    def is_empty(self) -> bool:
        return self.jobid == -1


class Instance:
    """A Flux instance whose jobs live the lives recorded in `lines` (a journal fixture)."""

    def __init__(
        self,
        lines: list[dict[str, Any]],
        *,
        break_after: int | None = None,
        refuse_journal: bool = False,
        foreign: tuple[int, ...] = (),
        size: int = 4,
    ) -> None:
        self.records = [line for line in lines if "sentinel" not in line]
        marks = [i for i, line in enumerate(lines) if "sentinel" in line]
        self.sentinel_at = marks[0] if marks else None
        self.kinds = {r["id"]: r.get("kind") for r in self.records}
        self.ids = [i for i in dict.fromkeys(r["id"] for r in self.records) if i not in foreign]
        self.submitted: set[int] = set(foreign)
        self.jobspecs: dict[int, dict[str, Any]] = {}
        self.cancels: list[tuple[int, str | None]] = []
        self.consumers: list[tuple[bool, bool]] = []
        self.break_after = break_after
        self.refuse_journal = refuse_journal
        self.refuse_submit: str | None = None
        self.unreachable = False
        self.size = size
        self.drained: dict[int, str] = {}
        self.refuse_drain: OSError | None = None
        self.outputs: dict[str, dict[str, str]] = {}  # kind -> recorded output eventlog
        self.lookups: list[int] = []
        self.cond = threading.Condition()

    def posted(self, record: dict[str, Any]) -> bool:
        jobid = record["id"]
        if jobid not in self.submitted:
            return False
        if record["name"] == "exception" and self.kinds.get(jobid) == "cancel":
            return any(cancelled == jobid for cancelled, _ in self.cancels)
        return True

    def wait_posted(self, record: dict[str, Any], timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(
                lambda: self.posted(record), None if timeout < 0 else timeout
            ):
                raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")

    def recorded(self, jobid: int, eventlog: bool = False) -> list[tuple[str, float]]:
        """The (name, timestamp) of a job's recorded events; an eventlog has no `annotations`."""
        return [
            (r["name"], r["timestamp"])
            for r in self.records
            if r["id"] == jobid and not (eventlog and r["name"] == "annotations")
        ]


class Future:
    def __init__(self, value: Any = None, error: OSError | None = None) -> None:
        self.value, self.error = value, error

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    get_id = get


class Watcher:
    def __init__(self, fd: int, callback: Any) -> None:
        self.fd, self.callback, self.active = fd, callback, False

    def start(self) -> Watcher:
        self.active = True
        return self

    def stop(self) -> Watcher:
        self.active = False
        return self


class Handle:
    """A handle on the instance, with a reactor that runs watch callbacks and fd watchers."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.watches: list[EventWatch] = []
        self.fd_watchers: list[Watcher] = []
        self.stopped = False

    def attr_get(self, name: str) -> str:
        return {"version": "0.88.0", "size": str(self.instance.size)}[name]

    def rpc(self, topic: str, payload: Any = None, nodeid: int = 0, flags: int = 0) -> Future:
        instance = self.instance
        targets = set(_decode(payload["targets"])) if payload and "targets" in payload else set()
        if topic == "job-info.lookup":
            jobid = payload["id"]
            instance.lookups.append(jobid)
            recorded = instance.outputs.get(instance.kinds.get(jobid) or "")
            if recorded is None:
                return Future(error=FileNotFoundError(errno.ENOENT, "No such file or directory"))
            return Future({"id": jobid, **{key: recorded[key] for key in payload["keys"]}})
        if topic == "resource.status":
            drain = {
                str(rank): {"timestamp": 1.0, "reason": r} for rank, r in instance.drained.items()
            }
            online = f"0-{instance.size - 1}"
            return Future({"online": online, "offline": "", "exclude": "", "drain": drain})
        if topic in ("resource.drain", "resource.undrain") and instance.refuse_drain:
            return Future(error=instance.refuse_drain)
        if topic == "resource.drain":
            if targets & instance.drained.keys():
                return Future(error=FileExistsError(errno.EEXIST, "rank already drained"))
            instance.drained.update(dict.fromkeys(targets, payload.get("reason", "")))
            return Future({})
        if topic == "resource.undrain":
            for rank in targets:
                del instance.drained[rank]
            return Future({})
        return Future(error=OSError(errno.ENOSYS, "Function not implemented"))

    def fd_watcher_create(self, fd: int, callback: Any, events: int = 1, args: Any = None):
        watcher = Watcher(fd, callback)
        self.fd_watchers.append(watcher)
        return watcher

    def reactor_stop(self) -> None:
        self.stopped = True

    def reactor_run(self) -> int:
        self.stopped = False
        while not self.stopped:
            ready = [watch for watch in self.watches if watch.ready()]
            for watch in ready:
                watch.callback(watch, *watch.args)
                if self.stopped:
                    return 0
            if ready:
                continue
            fds = [w.fd for w in self.fd_watchers if w.active]
            readable = select.select(fds, [], [], 0.01)[0]
            for watcher in self.fd_watchers:
                if watcher.active and watcher.fd in readable:
                    watcher.callback(self, watcher, watcher.fd, 1, None)
        return 0


class JournalConsumer:
    """Recorded journal: the sentinel then live events, or (full) the sorted backlog, sentinel,
    then live. As in flux-python, the sentinel is returned only when asked for and while
    `processing_inactive` (set from `full`, or by the caller) says the backlog is awaited, and
    events at or before `since` are dropped; `break_after` counts the events handed out."""

    def __init__(self, handle: Handle, full: bool = True, since: float = 0.0, **kwargs: Any):
        self.instance = handle.instance
        self.full = full
        self.since = since
        self.include_sentinel = kwargs.get("include_sentinel", False)
        self.processing_inactive = full
        self.stopped = False
        self.pos = 0
        self.handed_out = 0

    def start(self) -> JournalConsumer:
        instance = self.instance
        self.break_at = instance.break_after if not instance.consumers else None
        instance.consumers.append((self.full, self.include_sentinel))
        sentinel = [SENTINEL] if self.include_sentinel and self.processing_inactive else []
        self.items: list[dict[str, Any]] = sentinel + list(instance.records)
        if self.full:  # the backlog: what was recorded before the cut and is posted by now
            cut = instance.sentinel_at if instance.sentinel_at is not None else instance.break_after
            with instance.cond:
                posted = [instance.posted(r) for r in instance.records[:cut]]
            before = list(zip(instance.records[:cut], posted, strict=True))
            past = [r for r, done in before if done and r["name"] != "annotations"]
            past.sort(key=lambda r: r["timestamp"])
            later = [r for r, done in before if not done] + instance.records[cut:]
            self.items = past + sentinel + later
        self.items = [i for i in self.items if i is SENTINEL or i["timestamp"] > self.since]
        return self

    def poll(self, timeout: float = -1.0) -> Event | None:
        if self.instance.refuse_journal:
            raise PermissionError(errno.EPERM, "Request requires owner credentials")
        if self.pos >= len(self.items):
            if self.stopped:
                return None
            with self.instance.cond:
                self.instance.cond.wait(None if timeout < 0 else timeout)
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")
        item = self.items[self.pos]
        if item is SENTINEL:
            self.pos += 1
            return Event({})
        if self.handed_out == self.break_at:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        self.instance.wait_posted(item, timeout)
        self.pos += 1
        self.handed_out += 1
        return Event(item)

    def stop(self) -> None:
        self.stopped = True


class EventWatch:
    """`event_watch_async`: one job's eventlog (no `annotations`), then the end of the stream."""

    def __init__(self, handle: Handle, jobid: int) -> None:
        self.handle = handle
        self.instance = handle.instance
        self.items = [r for r in self.instance.records if r["id"] == jobid]
        self.items = [r for r in self.items if r["name"] != "annotations"]
        self.pos = 0
        self.args: tuple[Any, ...] = ()

    def then(self, callback: Any, *args: Any) -> EventWatch:
        self.callback, self.args = callback, args
        self.handle.watches.append(self)
        return self

    def ready(self) -> bool:
        with self.instance.cond:
            return self.pos >= len(self.items) or self.instance.posted(self.items[self.pos])

    def get_event(self) -> Event | None:
        if self.pos >= len(self.items):
            self.cancel()
            return None
        self.pos += 1
        return Event(self.items[self.pos - 1])

    def cancel(self) -> None:
        if self in self.handle.watches:
            self.handle.watches.remove(self)


def submit_async(handle: Handle, jobspec: str) -> Future:
    instance = handle.instance
    if instance.refuse_submit:
        return Future(error=OSError(errno.EINVAL, instance.refuse_submit))
    with instance.cond:
        jobid = next(i for i in instance.ids if i not in instance.submitted)
        instance.submitted.add(jobid)
        instance.jobspecs[jobid] = json.loads(jobspec)
        instance.cond.notify_all()
    return Future(jobid)


def cancel_async(handle: Handle, jobid: int, reason: str | None = None) -> Future:
    instance = handle.instance
    with instance.cond:
        if jobid not in instance.submitted:
            return Future(error=FileNotFoundError(errno.ENOENT, "unknown job id"))
        instance.cancels.append((jobid, reason))
        instance.cond.notify_all()
    return Future()


def install(monkeypatch: Any, instance: Instance) -> None:
    """Put fake `flux`, `flux.job` and `flux.constants` modules where `import flux` finds them."""

    def open_handle(uri: str | None = None) -> Handle:
        if instance.unreachable:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return Handle(instance)

    flux = types.ModuleType("flux")
    job = types.ModuleType("flux.job")
    constants = types.ModuleType("flux.constants")
    flux.Flux = open_handle
    job.submit_async = submit_async
    job.cancel_async = cancel_async
    job.JournalConsumer = JournalConsumer
    job.event_watch_async = EventWatch
    constants.FLUX_POLLIN = 1
    flux.job, flux.constants = job, constants
    for name, module in (("flux", flux), ("flux.job", job), ("flux.constants", constants)):
        monkeypatch.setitem(sys.modules, name, module)


def _decode(text: str) -> list[int]:
    ranks: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        ranks.extend(range(int(first), int(last or first) + 1))
    return ranks
