"""Warm workers: a member around another member, whose jobs are long-lived workers that run
tasks forked from a warm interpreter.

One queue job per task is what lets the ensemble watch the queue's events and resubmit a job
with more memory, but it costs a process start (and the imports) per task. This member keeps
that truth per task while paying the start once per worker: it runs `workers` worker processes
(`warm_worker`) as ordinary jobs of the inner member (local, Flux, Kubernetes), each sized like a
job (`worker_cores`, `worker_memory_mb`, `worker_gpus`); they connect back to this process
(`address`, `port`) and prove they know the run's secret (`warm_protocol`); tasks that fit a
worker are sent to one, and the worker forks each from itself and reports it as a job: `start`,
`finish` with the wait status, `exception` `oom`, `timeout` or `cancel`. The controller cannot
tell this member from any other: every rule works as it does for jobs.

- A task that fits no worker (more cores, GPUs or memory than a worker has, several tasks or
  nodes) runs as a plain job of the inner member, whose events pass through unchanged. While
  one waits for room there, idle workers leave, so that workers never hold it off.
- Tasks wait in submission order for room on a worker (`alloc` when one takes it). Once all
  workers run and are busy, each also holds one task more than it has room for, which it starts
  as soon as a running task ends (`start` then): it never waits for this process between two.
  A task so held behind a long one moves to a worker that has room first (`_rebalance`).
- A worker whose connection or job ends while it runs tasks ends them as `node-failure`
  (exception type `lost`), once its job has ended too (so the task is not running anywhere any
  more when a rule resubmits it), or after `LOST_WAIT_SECONDS` at most.
- The in-process tasks of the modules named in `reuse` run one after another in a process the
  worker keeps (`warm_runner`), still each reported as a job of its own.
- Elastic: `grow` and `shrink` change the number of workers (within 1 and `max_workers`), a
  worker idle for `idle_seconds` leaves, and workers start again when tasks wait.
- Workers that end before connecting, `START_FAILURES` times in a row, mean they cannot start
  (no such Python, a node that cannot reach this address): the tasks waiting for them, and later
  ones, fail with the reason and the worker's output file, instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import math
import os
import socket
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import AttemptRecord, JobEvent
from ensemble_core.members.base import EmitEvent, Member
from ensemble_core.members.local_output import safe_name
from ensemble_core.members.warm_connection import WorkerConnection
from ensemble_core.members.warm_protocol import (
    ADDRESS_ENV,
    NAME_ENV,
    SECRET_ENV,
    encode,
    new_secret,
    proven,
)
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

WORKER_MODULE = "ensemble_core.members.warm_worker"
#: The group of worker jobs on the inner member (the controller never sees them).
WORKER_GROUP = "warm-worker"
START_FAILURES = 3
#: How long a worker whose connection ended may take to end as a job before its tasks end.
LOST_WAIT_SECONDS = 30.0
#: How long `close` waits for workers to leave before it cancels their jobs.
CLOSE_SECONDS = 5.0
RECENT_TASKS = 1024
#: Tasks a worker holds beyond its room, to start the moment a running one ends (Parsl's HTEX
#: calls it prefetch): the worker never waits for the controller between two tasks.
PREFETCH = 1
#: Warm task ids are `warm_1`, `warm_2`, ...: no member's id looks so (Kubernetes names have no
#: underscore, Flux and local ids are numbers).
TASK_PREFIX = "warm_"


@dataclass(slots=True, eq=False)
class _Worker:
    name: str
    size: tuple[int, int | None, int]  # cores, memory_mb, gpus of its job
    cores: int  # free: what the tasks given to it leave (below 0 while one waits in it)
    memory_mb: int | None
    gpus: int
    inner_id: Any = None
    #: submitted (its job is on the way), ready (connected), stopping, lost (connection ended)
    state: str = "submitted"
    writer: asyncio.WriteTransport | None = None
    host: str = ""
    tasks: set[str] = field(default_factory=set)
    #: tasks given to it beyond its free room: it starts them as running ones end
    waiting: set[str] = field(default_factory=set)
    idle_since: float | None = None
    idle_timer: asyncio.TimerHandle | None = None
    ended_why: str = ""
    job: AttemptRecord = field(default_factory=AttemptRecord)
    outbox: list[bytes] = field(default_factory=list)

    def has_room(self, spec: JobSpec) -> bool:
        return self.state == "ready" and self._fits(spec)

    def can_hold(self) -> bool:
        """Room for one task that waits in the worker until a running one ends."""
        return self.state == "ready" and len(self.waiting) < PREFETCH and self.cores >= 0

    def _fits(self, spec: JobSpec) -> bool:
        return (
            spec.cores_per_task <= self.cores
            and spec.gpus_per_task <= self.gpus
            and (self.memory_mb is None or (spec.memory_mb or 0) <= self.memory_mb)
        )

    def take(self, task_id: str, spec: JobSpec) -> None:
        if not self._fits(spec):
            self.waiting.add(task_id)
        self.tasks.add(task_id)
        self._hold(spec, 1)

    def give_back(self, task_id: str, spec: JobSpec) -> None:
        self.tasks.discard(task_id)
        self.waiting.discard(task_id)
        self._hold(spec, -1)

    def _hold(self, spec: JobSpec, sign: int) -> None:
        self.cores -= sign * spec.cores_per_task
        self.gpus -= sign * spec.gpus_per_task
        if self.memory_mb is not None:
            self.memory_mb -= sign * (spec.memory_mb or 0)

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message; those of one turn of the loop go in one write (one wakeup of the
        worker for the tasks a burst of reports freed room for)."""
        self.outbox.append(encode(message))
        if len(self.outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(b"".join(self.outbox))
        self.outbox.clear()


@dataclass(slots=True, eq=False)
class _Task:
    id: str
    spec: JobSpec
    stdout: str
    stderr: str
    worker: _Worker | None = None
    #: asked back from the worker holding it (`_rebalance`): its answer is on the way
    moving: bool = False
    #: a cancel was sent to its worker (which may have given it back meanwhile)
    cancelled: bool = False


class WarmMember(Member):
    """Tasks on warm workers that run as jobs of `inner`; see the module's docstring."""

    #: Workers end when their connection to this process does: so do their tasks.
    jobs_end_with_controller = True

    def __init__(
        self,
        inner: Member,
        workers: int = 1,
        max_workers: int | None = None,
        worker_cores: int = 1,
        worker_memory_mb: int | None = None,
        worker_gpus: int = 0,
        idle_seconds: float | None = 60.0,
        address: str | None = None,
        port: int = 0,
        worker_python: str | None = None,
        preload: list[str] | None = None,
        reuse: list[str] | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.workers = workers
        self.max_workers = max(max_workers or workers, workers)
        self.worker_cores = worker_cores
        self.worker_memory_mb = worker_memory_mb
        self.worker_gpus = worker_gpus
        self.idle_seconds = idle_seconds
        self.address = address
        self.port = port
        # Kubernetes runs workers in the member's image, where this interpreter's path means
        # nothing: its `python3` then; elsewhere this very Python, on a file system they share.
        self.worker_python = worker_python or (
            "python3" if inner.name == "kubernetes" else sys.executable
        )
        self.preload = preload
        self.reuse = reuse
        self.log_dir = Path(getattr(inner, "log_dir", "ensemble-logs"))
        self._target = workers
        self._secret = new_secret()
        self._listening = ""
        self._emit: EmitEvent = lambda event: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._workers: dict[str, _Worker] = {}
        self._by_inner: dict[Any, _Worker] = {}
        self._worker_names = itertools.count(1)
        self._task_ids = itertools.count(1)
        self._tasks: dict[str, _Task] = {}
        self._queue: deque[_Task] = deque()
        #: Tasks submitted in this turn of the loop (`_take_submitted`).
        self._submitted: list[_Task] = []
        self._queued_cores = 0
        #: Output paths of the tasks that ended last (checked for existence when asked).
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._held: list[JobEvent] = []  # inner events while a worker's submission is in flight
        self._plain_waiting: set[Any] = set()  # plain jobs submitted and not yet allocated
        self._worker_submits = 0
        self._start_failures = 0
        self._broken = ""
        self._learned: list[str] = list(preload or [])
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    # Member protocol --------------------------------------------------------------------------

    async def start(self, emit: EmitEvent) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self.inner.on_lost = lambda reason: self.on_lost(reason)
        await self.inner.start(self._inner_event)
        # The local member writes each run into a directory of its own: so do its workers.
        self.log_dir = Path(getattr(self.inner, "output_dir", self.log_dir))
        host = self.address or _default_address(self.inner.name)
        try:
            self._server = await self._loop.create_server(
                self._connection, host=host, port=self.port
            )
        except OSError as error:
            raise MemberError(
                f"warm workers: cannot listen on {host}:{self.port}: {error.strerror or error} "
                "(choose another address or port)"
            ) from None
        port = self._server.sockets[0].getsockname()[1]
        self._listening = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for _ in range(self._target):
            self._start_worker()

    async def submit(self, spec: JobSpec) -> Any:
        if self._closed:
            raise MemberError("the warm member is closed: it starts no more jobs")
        if not self.runs_warm(spec):
            return await self.inner.submit(spec)
        task_id = f"{TASK_PREFIX}{next(self._task_ids)}"
        stdout, stderr = self._output_paths(task_id, spec)
        task = self._tasks[task_id] = _Task(task_id, spec, stdout, stderr)
        self._submitted.append(task)
        if len(self._submitted) == 1:
            asyncio.get_running_loop().call_soon(self._take_submitted)
        return task_id

    def _take_submitted(self) -> None:
        """The tasks submitted since the last turn of the loop: their first events, now that
        their submitter knows their ids (it would hold the events meanwhile, as a member's that
        come before the id), then their placement, all of them at once."""
        submitted, self._submitted = self._submitted, []
        for task in submitted:
            self._event(task.id, "submit", {"urgency": 16, "flags": 0, "version": 1})
            self._event(task.id, "validate")
            self._event(task.id, "depend")
            self._event(task.id, "priority", {"priority": 16})
            if self._broken:
                self._fail(task, "exec", f"no warm worker could start: {self._broken}")
                continue
            self._queue.append(task)
            self._queued_cores += task.spec.cores_per_task
        self._dispatch()

    async def cancel(self, jobid: Any) -> None:
        if not _is_task(jobid):
            await self.inner.cancel(jobid)
            return
        task = self._tasks.get(jobid)
        if task is None:
            return  # it has ended already
        if task in self._submitted:
            self._take_submitted()  # its first events come before its end
            if task.id not in self._tasks:
                return  # no worker could start: it has ended
        if task.worker is None:
            self._queue.remove(task)
            self._queued_cores -= task.spec.cores_per_task
            self._fail(task, "cancel", "cancelled")
        else:
            task.cancelled = True
            task.worker.send({"op": "cancel", "id": task.id})

    async def grow(self, value: int) -> str:
        before = self._target
        self._target = min(self.max_workers, self._target + value)
        for _ in range(self._target - len(self._live())):
            self._start_worker()
        note = f": max_workers is {self.max_workers}" if self._target - before < value else ""
        return f"grew by {self._target - before} warm worker(s) to {self._target}{note}"

    async def shrink(self, value: int) -> str:
        before = self._target
        self._target = max(1, self._target - value)
        stopped = 0
        extra = len(self._live()) - self._target
        for worker in sorted(self._live(), key=lambda w: (len(w.tasks), w.state == "ready")):
            if stopped >= extra or worker.tasks:
                break
            self._stop(worker)
            stopped += 1
        busy = max(0, extra - stopped)
        note = f"; {busy} more leave when their tasks end" if busy else ""
        floor = " (never below 1)" if before - self._target < value else ""
        return (
            f"shrank by {before - self._target} warm worker(s) to {self._target}{floor}: "
            f"{stopped} stopped{note}"
        )

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Plain jobs the inner member still runs; tasks ended with their workers."""
        return await self.inner.adopt(jobs)

    def ends_with_controller(self, member_id: Any) -> bool:
        return _is_task(member_id) or self.inner.ends_with_controller(member_id)

    def runs_warm(self, spec: JobSpec) -> bool:
        """Whether a job of this spec runs on a worker (else as a plain job of the inner
        member): one task on one node, within a worker's cores, GPUs and memory."""
        return (
            spec.tasks == 1
            and (spec.nodes or 1) == 1
            and not spec.exclusive
            and spec.cores_per_task <= self.worker_cores
            and spec.gpus_per_task <= self.worker_gpus
            and (self.worker_memory_mb is None or (spec.memory_mb or 0) <= self.worker_memory_mb)
        )

    def describe(self) -> dict[str, Any]:
        described = {
            **self.inner.describe(),
            "workers": len(self._live()),
            "target_workers": self._target,
            "max_workers": self.max_workers,
            "worker_cores": self.worker_cores,
            "worker_memory_mb": self.worker_memory_mb,
            "worker_gpus": self.worker_gpus,
            "idle_seconds": self.idle_seconds,
            "listening": self._listening,
        }
        if self._broken:
            described["workers_failed"] = self._broken
        return described

    def log_paths(self, jobid: Any) -> list[str]:
        if _is_task(jobid):
            task = self._tasks.get(jobid)
            if task is None:
                return _existing(*self._recent.get(jobid, ("", "")))
            return _existing(task.stdout, task.stderr)
        return self.inner.log_paths(jobid)

    async def close(self) -> None:
        """Stop every worker, wait (bounded) for their jobs to end, then close the inner
        member: nothing is left running."""
        self._closed = True
        for worker in list(self._workers.values()):
            self._stop(worker)
        deadline = time.monotonic() + CLOSE_SECONDS
        while self._workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for worker in list(self._workers.values()):
            if worker.inner_id is not None:
                with contextlib.suppress(Exception):
                    await self.inner.cancel(worker.inner_id)
        deadline = time.monotonic() + 2
        while self._workers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._server is not None:
            self._server.close()
        for worker in self._workers.values():
            if worker.writer is not None:
                worker.writer.close()
        for task in list(self._background):
            task.cancel()
        await self.inner.close()

    # Workers ----------------------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        return [w for w in self._workers.values() if w.state in ("submitted", "ready")]

    def _start_worker(self) -> None:
        if self._closed or self._broken:
            return
        name = f"w{next(self._worker_names)}"
        size = (self.worker_cores, self.worker_memory_mb, self.worker_gpus)
        worker = _Worker(name, size, *size)
        self._workers[name] = worker
        self._worker_submits += 1
        self._spawn(self._submit_worker(worker))

    def _worker_spec(self, name: str) -> JobSpec:
        return JobSpec(
            command=[self.worker_python, "-P", "-m", WORKER_MODULE],
            group=WORKER_GROUP,
            name=f"{WORKER_GROUP}-{name}",
            cores_per_task=self.worker_cores,
            gpus_per_task=self.worker_gpus,
            memory_mb=self.worker_memory_mb,
            environment={ADDRESS_ENV: self._listening, NAME_ENV: name, SECRET_ENV: self._secret},
            stdout=str(self._worker_log(name)),
        )

    async def _submit_worker(self, worker: _Worker) -> None:
        try:
            worker.inner_id = await self.inner.submit(self._worker_spec(worker.name))
            self._by_inner[worker.inner_id] = worker
        except Exception as error:
            self._workers.pop(worker.name, None)
            self._start_failed(f"its submission to the {self.inner.name} member failed: {error}")
        finally:
            self._worker_submits -= 1
            held, self._held = self._held, []
            for event in held:
                self._inner_event(event)
        if self._closed and worker.state != "gone":
            self._stop(worker)

    def _stop(self, worker: _Worker) -> None:
        """Tell a worker to leave; one not connected yet has its job cancelled."""
        if worker.state in ("stopping", "gone"):
            return
        connected = worker.state == "ready"
        worker.state = "stopping"
        if connected:
            worker.send({"op": "stop"})
        elif worker.inner_id is not None:
            self._spawn(self._cancel_worker_job(worker))

    async def _cancel_worker_job(self, worker: _Worker) -> None:
        try:
            await self.inner.cancel(worker.inner_id)
        except Exception as error:
            log.warning("warm workers: cancelling worker %s failed: %s", worker.name, error)

    def _inner_event(self, event: JobEvent) -> None:
        """An event of the inner member: a worker's, or a plain job's (passed on)."""
        worker = self._by_inner.get(event.jobid)
        if worker is not None:
            worker.job.observe(event)
            if event.name == "clean":
                self._worker_gone(worker)
        elif self._worker_submits:
            self._held.append(event)
        else:
            self._plain_event(event)
            self._forward(event)

    def _plain_event(self, event: JobEvent) -> None:
        """Note plain jobs that wait on the inner member: idle workers give their place back."""
        if event.name == "submit":
            self._plain_waiting.add(event.jobid)
            for worker in list(self._workers.values()):
                self._idle(worker)
        elif event.name in ("alloc", "start", "clean"):
            self._plain_waiting.discard(event.jobid)

    def _worker_gone(self, worker: _Worker) -> None:
        """The worker's job ended: its tasks end, and another worker starts if tasks wait."""
        self._workers.pop(worker.name, None)
        self._by_inner.pop(worker.inner_id, None)
        was = worker.state
        worker.state = "gone"
        if worker.writer is not None:
            worker.writer.close()
        why = self._job_end(worker)
        for task_id in list(worker.tasks):
            note = (
                f"warm worker {worker.name} ({self.inner.name} job {worker.inner_id}"
                f"{' on ' + worker.host if worker.host else ''}) ended while the task ran: {why}"
            )
            self._fail(self._tasks[task_id], "lost", note)
        if was == "submitted" and not self._closed:
            self._start_failed(f"worker {worker.name} ended before it connected: {why}")
        self._dispatch()

    def _job_end(self, worker: _Worker) -> str:
        """Why a worker's job ended, with the end of its output."""
        why = worker.ended_why or worker.job.reason
        path = self._worker_log(worker.name)
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").strip().splitlines()[-3:]
            if tail:
                why += f" (its output, {path}: {' | '.join(tail)})"
        return why

    def _worker_log(self, name: str) -> Path:
        return self.log_dir / f"{WORKER_GROUP}-{os.getpid()}-{name}.log"

    def _start_failed(self, why: str) -> None:
        self._start_failures += 1
        log.warning("warm workers: %s", why)
        if self._start_failures < START_FAILURES:
            return
        self._broken = f"{self._start_failures} workers in a row ended before connecting; {why}"
        log.error("warm workers: %s", self._broken)
        while self._queue:
            task = self._queue.popleft()
            self._fail(task, "exec", f"no warm worker could start: {self._broken}")
        self._queued_cores = 0

    # Connections ------------------------------------------------------------------------------

    def _connection(self) -> WorkerConnection:
        """A worker's connection: it proves itself (`_welcome`), then its reports are read
        (`_on_message`) until it ends (`_connection_ended`)."""
        return WorkerConnection(self._welcome, self._on_message, self._connection_ended)

    def _welcome(
        self, hello: dict[str, Any], challenge: str, writer: asyncio.WriteTransport
    ) -> _Worker | None:
        """The worker a connection's hello names, if it proved the secret and is awaited."""
        worker = self._workers.get(str(hello.get("name")))
        peer = writer.get_extra_info("peername")
        if not proven(self._secret, challenge, hello.get("proof")):
            log.warning("warm workers: a connection from %s did not prove the secret", peer)
            return None
        if worker is None or worker.state != "submitted" or self._closed:
            return None  # stopped or replaced meanwhile: it leaves when its connection closes
        worker.writer = writer
        worker.state = "ready"
        worker.host = str(hello.get("host", ""))
        self._start_failures = 0
        cores, memory_mb, gpus = worker.size
        worker.send({"op": "size", "cores": cores, "memory_mb": memory_mb, "gpus": gpus})
        if self._learned:
            worker.send({"op": "preload", "modules": self._learned})
        if self.reuse:
            worker.send({"op": "reuse", "modules": self.reuse})
        self._dispatch()
        self._idle(worker)  # nothing waited for it: idle from now
        return worker

    def _on_message(self, worker: _Worker, line: bytes) -> None:
        try:
            message = json.loads(line)
            op = message.get("op")
            if op == "learned":
                self._learn(worker, message.get("modules", []))
                return
            task = self._tasks.get(message.get("id"))
            if task is None or task.worker is not worker:
                return
            if op == "start":
                worker.waiting.discard(task.id)
                task.moving = False
                self._event(task.id, "start")
            elif op == "withdrawn":
                self._withdrawn(task)
            elif op == "exception":
                context = {"type": message.get("type"), "severity": 0, "note": message.get("note")}
                self._event(task.id, "exception", context)
            elif op == "done":
                if message.get("tidied"):  # its output files are gone: none to look for
                    task.stdout = task.stderr = ""
                self._done(task, message.get("status"), message.get("result"))
        except Exception:  # one report that cannot be read must not end the connection
            log.exception("warm workers: a report of worker %s could not be handled", worker.name)

    def _connection_ended(self, worker: _Worker, why: str) -> None:
        """The worker's connection ended; its job is about to end (or is made to), and its
        tasks with it. A worker that was told to stop and had nothing to do just leaves."""
        worker.writer = None
        if worker.state in ("gone", "lost") or (worker.state == "stopping" and not worker.tasks):
            return
        worker.state = "lost"
        worker.ended_why = why
        self._spawn(self._cancel_worker_job(worker))
        if worker.tasks:
            assert self._loop is not None
            self._loop.call_later(LOST_WAIT_SECONDS, self._give_up_on, worker)
        self._dispatch()

    def _give_up_on(self, worker: _Worker) -> None:
        if worker.state == "lost":
            worker.ended_why += (
                f"; its {self.inner.name} job did not end within {LOST_WAIT_SECONDS:g} s of "
                "that, so the task may still run there"
            )
            self._worker_gone(worker)

    def _learn(self, worker: _Worker, modules: list[str]) -> None:
        """Modules one worker's tasks imported: the other workers import them too."""
        fresh = [m for m in modules if isinstance(m, str) and m not in self._learned]
        self._learned.extend(fresh)
        for other in self._workers.values():
            if other is not worker and fresh:
                other.send({"op": "preload", "modules": fresh})

    # Tasks ------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Give waiting tasks, oldest first, to workers with room; start workers they need."""
        queue = self._queue
        while queue:
            task = queue[0]
            worker = next((w for w in self._workers.values() if w.has_room(task.spec)), None)
            if worker is None and self._all_started():
                worker = next((w for w in self._workers.values() if w.can_hold()), None)
            if worker is None:
                break
            queue.popleft()
            self._queued_cores -= task.spec.cores_per_task
            self._assign(task, worker)
        if queue:
            self._provision()
        else:
            self._rebalance()

    def _rebalance(self) -> None:
        """Ask back the tasks held in busy workers (prefetched) that a worker with room now could
        start: held behind a long task, one would wait for its end while the other idles. A
        worker that started the task meanwhile just runs it; one that gives it back says
        `withdrawn`, and the task goes to the head of the queue."""
        room = {w: w.cores for w in self._workers.values() if w.state == "ready" and w.cores > 0}
        if not room:
            return
        for holder in self._workers.values():
            if holder.cores >= 0 or holder.state != "ready":
                continue  # what it holds fits it: it has started it, or is about to
            for task_id in holder.waiting:
                task = self._tasks[task_id]
                if task.moving:
                    continue
                cores = task.spec.cores_per_task  # the holder, short of room, is not in `room`
                taker = next((w for w in room if room[w] >= cores and w.has_room(task.spec)), None)
                if taker is not None:
                    room[taker] -= cores
                    task.moving = True
                    holder.send({"op": "withdraw", "id": task_id})

    def _withdrawn(self, task: _Task) -> None:
        """Its worker gave back a task it held: to the head of the queue (or, cancelled
        meanwhile, ended as such)."""
        assert task.worker is not None
        task.worker.give_back(task.id, task.spec)
        task.worker, task.moving = None, False
        if task.cancelled:
            self._fail(task, "cancel", "cancelled")
            return
        self._queue.appendleft(task)
        self._queued_cores += task.spec.cores_per_task
        self._dispatch()

    def _all_started(self) -> bool:
        """No worker is on its way and no more may start: a task may wait inside one."""
        live = self._live()
        return len(live) >= self._target and all(w.state == "ready" for w in live)

    def _provision(self) -> None:
        """Start workers (up to the target) for tasks no worker has room for."""
        live = self._live()
        starting = sum(1 for w in live if w.state == "submitted")
        needed = math.ceil(self._queued_cores / self.worker_cores) - starting
        for _ in range(min(self._target - len(live), needed)):
            self._start_worker()

    def _assign(self, task: _Task, worker: _Worker) -> None:
        spec = task.spec
        task.worker = worker
        worker.take(task.id, spec)
        worker.idle_since = None
        self._event(task.id, "alloc")
        worker.send(
            {
                "op": "run",
                "id": task.id,
                "argv": spec.command,
                "env": {
                    **spec.environment,
                    "ENSEMBLE_JOB_ID": task.id,
                    "ENSEMBLE_GROUP": spec.group,
                    "FLUX_JOB_SIZE": "1",
                    "FLUX_TASK_RANK": "0",
                },
                "cwd": spec.cwd,
                "stdout": task.stdout,
                "stderr": task.stderr,
                "walltime": spec.walltime,
                "memory_mb": spec.memory_mb,
                "cores": spec.cores_per_task,
                "gpus": spec.gpus_per_task,
            }
        )

    def _done(self, task: _Task, status: int | None, result: str | None = None) -> None:
        """The worker says the task's process ended (status None: it never started); a task
        whose reused process sent its result back has it in its `finish` (`warm_result`)."""
        worker = task.worker
        if status is not None:
            finish: dict[str, Any] = {"status": status}
            if result:
                finish["result"] = base64.b64decode(result)
            self._event(task.id, "finish", finish)
        self._release(task)
        self._dispatch()
        if worker is not None:  # idle only if nothing waited for it (no idle timer made)
            self._idle(worker)

    def _fail(self, task: _Task, kind: str, note: str) -> None:
        """End a task for a reason of the member's (never started, lost, cancelled waiting)."""
        self._event(task.id, "exception", {"type": kind, "severity": 0, "note": note})
        self._release(task)

    def _release(self, task: _Task) -> None:
        worker = task.worker
        if worker is not None:
            worker.give_back(task.id, task.spec)
            self._event(task.id, "release", {"ranks": "all", "final": True})
            self._event(task.id, "free")
        del self._tasks[task.id]
        self._recent[task.id] = (task.stdout, task.stderr)
        if len(self._recent) > RECENT_TASKS:
            self._recent.popitem(last=False)
        self._event(task.id, "clean")

    def _idle(self, worker: _Worker) -> None:
        """A worker without tasks leaves, when no task waits, if there are more than wanted or
        a plain job waits for the inner member's room (the worker would hold it); else when it
        has been idle for `idle_seconds`."""
        if worker.tasks or worker.state != "ready":
            return
        if not self._queue and (self._plain_waiting or len(self._live()) > self._target):
            self._stop(worker)
            return
        stamp = worker.idle_since = time.monotonic()
        if self.idle_seconds is not None and self._loop is not None:
            if worker.idle_timer is not None:
                worker.idle_timer.cancel()
            worker.idle_timer = self._loop.call_later(
                self.idle_seconds, self._leave_if_idle, worker, stamp
            )

    def _leave_if_idle(self, worker: _Worker, stamp: float) -> None:
        if worker.state == "ready" and not worker.tasks and worker.idle_since == stamp:
            self._stop(worker)

    def _output_paths(self, task_id: str, spec: JobSpec) -> tuple[str, str]:
        """As the local member names them: the job's own files, else one pair in log_dir."""
        label = f"{safe_name(spec.group)}-{task_id}"
        stdout = spec.stdout.replace("{{id}}", task_id) if spec.stdout else None
        stderr = spec.stderr.replace("{{id}}", task_id) if spec.stderr else None
        out = stdout or str(self.log_dir / f"{label}.out")
        return out, stderr or (out if stdout else str(self.log_dir / f"{label}.err"))

    # Events -----------------------------------------------------------------------------------

    def _event(self, jobid: str, name: str, context: dict[str, Any] | None = None) -> None:
        self._forward(JobEvent(jobid, name, time.time(), context or {}))

    def _forward(self, event: JobEvent) -> None:
        try:
            self._emit(event)
        except Exception:
            log.exception("warm workers: the handler of %s's %s event raised", event.jobid, event)

    def _spawn(self, coroutine: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _is_task(jobid: Any) -> bool:
    """Whether an id is a warm task's (plain jobs have the inner member's ids)."""
    return isinstance(jobid, str) and jobid.startswith(TASK_PREFIX)


def _existing(stdout: str, stderr: str) -> list[str]:
    return sorted(path for path in {stdout, stderr} if path and os.path.exists(path))


def _default_address(inner: str) -> str:
    """Loopback for the local member; else this host's address, which jobs on other nodes
    can reach (set `address` where it is not the right one)."""
    if inner == "local":
        return "127.0.0.1"
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
