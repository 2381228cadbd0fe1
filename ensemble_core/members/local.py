"""The local member: real processes on this machine, scheduled like a small Flux instance.

Capacity is a set of virtual nodes (one by default) with the machine's cores and memory. Jobs that
fit run side by side; the rest wait in order. Walltime and memory limits are enforced, so timeout
and oom are real outcomes; a job that no size of this member could ever hold is refused at once
with Flux's unsatisfiable `alloc` exception. Process exits arrive through pidfds on the event loop:
nothing polls, except the memory watch of jobs that set a memory limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent
from ensemble_core.members.base import EmitEvent, Member
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

MEMORY_CHECK_SECONDS = 0.1
PAGE_MB = resource.getpagesize() / 2**20


def machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


@dataclass(slots=True)
class _Node:
    cores: int
    memory_mb: int
    gpus: int
    used_cores: int = 0
    used_memory_mb: int = 0
    used_gpus: int = 0
    exclusive: bool = False

    @property
    def idle(self) -> bool:
        return self.used_cores == 0 and self.used_gpus == 0 and self.used_memory_mb == 0

    def fits(self, cores: int, gpus: int, memory_mb: int, exclusive: bool) -> bool:
        if self.exclusive or (exclusive and not self.idle):
            return False
        return (
            self.used_cores + cores <= self.cores
            and self.used_gpus + gpus <= self.gpus
            and self.used_memory_mb + memory_mb <= self.memory_mb
        )


@dataclass(slots=True)
class _Share:
    node: _Node
    cores: int
    gpus: int
    memory_mb: int
    exclusive: bool

    def take(self, sign: int) -> None:
        self.node.used_cores += sign * self.cores
        self.node.used_gpus += sign * self.gpus
        self.node.used_memory_mb += sign * self.memory_mb
        self.node.exclusive = self.exclusive and sign > 0


@dataclass(slots=True)
class _Job:
    jobid: int
    spec: JobSpec
    stdout: Path
    stderr: Path
    shares: list[_Share] = field(default_factory=list)
    pids: dict[int, int] = field(default_factory=dict)  # pid -> pidfd (or -1)
    groups: list[int] = field(default_factory=list)  # its tasks' process groups, kept after exit
    statuses: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    ending: bool = False


def place(spec: JobSpec, nodes: list[_Node]) -> list[_Share] | None:
    """Where the job's slots go on these nodes now, or None if they do not fit."""
    memory = spec.memory_mb or 0
    if spec.nodes is not None:
        slots = math.ceil(spec.tasks / spec.nodes)
        cores, gpus = slots * spec.cores_per_task, slots * spec.gpus_per_task
        share_memory = math.ceil(memory / spec.nodes)
        chosen = [n for n in nodes if n.fits(cores, gpus, share_memory, spec.exclusive)]
        if len(chosen) < spec.nodes:
            return None
        return [_Share(n, cores, gpus, share_memory, spec.exclusive) for n in chosen[: spec.nodes]]
    shares: list[_Share] = []
    left = spec.tasks
    per_slot_memory = math.ceil(memory / spec.tasks)
    for node in nodes:
        count = 0
        while count < left and node.fits(
            (count + 1) * spec.cores_per_task,
            (count + 1) * spec.gpus_per_task,
            (count + 1) * per_slot_memory,
            False,
        ):
            count += 1
        if count:
            shares.append(
                _Share(
                    node,
                    count * spec.cores_per_task,
                    count * spec.gpus_per_task,
                    count * per_slot_memory,
                    False,
                )
            )
            left -= count
        if not left:
            return shares
    return None


class LocalMember(Member):
    """Processes on this machine, with Flux's events and outcomes."""

    name = "local"

    def __init__(
        self,
        cores: int | None = None,
        memory_mb: int | None = None,
        gpus: int = 0,
        nodes: int = 1,
        max_nodes: int | None = None,
        log_dir: str = "ensemble-logs",
        grace_seconds: float = 2.0,
    ) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.memory_mb = memory_mb or machine_memory_mb()
        self.gpus = gpus
        self.max_nodes = max(max_nodes or nodes, nodes)
        if min(self.cores, self.memory_mb, nodes) < 1 or gpus < 0:
            raise MemberError(
                "local member: cores, memory and nodes must be at least 1 and gpus at least 0"
            )
        self.nodes = [self._new_node() for _ in range(nodes)]
        #: The member at its largest and idle: what no job may exceed.
        self._largest = [self._new_node() for _ in range(self.max_nodes)]
        self.log_dir = Path(log_dir)
        self.grace_seconds = grace_seconds
        self._ids = itertools.count(1)
        self._pending: dict[int, _Job] = {}
        self._running: dict[int, _Job] = {}
        self._jobs: dict[int, _Job] = {}
        self._emit: EmitEvent = lambda event: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._memory_watch: asyncio.Task[None] | None = None
        self._made_dirs: set[Path] = set()

    def _new_node(self) -> _Node:
        return _Node(self.cores, self.memory_mb, self.gpus)

    # Member protocol --------------------------------------------------------------------------

    async def start(self, emit: EmitEvent) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._made_dirs.add(self.log_dir)

    async def submit(self, spec: JobSpec) -> int:
        jobid = next(self._ids)
        job = _Job(jobid, spec, *self._output_paths(spec, jobid))
        self._jobs[jobid] = job
        self._event(jobid, "submit", {"urgency": 16, "flags": 0, "version": 1})
        self._event(jobid, "validate")
        why = self._unsatisfiable(spec)
        if why:
            self._event(jobid, "exception", {"type": "alloc", "severity": 0, "note": why})
            self._finish_events(jobid, ran=False)
            return jobid
        self._event(jobid, "depend")
        self._event(jobid, "priority", {"priority": 16})
        self._pending[jobid] = job
        self._schedule()
        return jobid

    async def cancel(self, jobid: Any) -> None:
        job = self._pending.pop(jobid, None)
        if job is not None:
            self._event(jobid, "exception", {"type": "cancel", "severity": 0, "note": "cancelled"})
            self._finish_events(jobid, ran=False)
            return
        job = self._running.get(jobid)
        if job is not None and not job.ending:
            self._end(job, "cancel", "cancelled")

    async def grow(self, value: int) -> str:
        room = self.max_nodes - len(self.nodes)
        added = min(value, room)
        self.nodes.extend(self._new_node() for _ in range(added))
        self._schedule()
        if added < value:
            return f"grew by {added} node(s) to {len(self.nodes)}: max_nodes is {self.max_nodes}"
        return f"grew by {added} node(s) to {len(self.nodes)}"

    async def shrink(self, value: int) -> str:
        removed = 0
        for node in reversed(list(self.nodes)):
            if removed == value or len(self.nodes) == 1:
                break
            if node.idle:
                self.nodes.remove(node)
                removed += 1
        note = "" if removed == value else " (only idle nodes are removed, never the last)"
        return f"shrank by {removed} node(s) to {len(self.nodes)}{note}"

    def describe(self) -> dict[str, Any]:
        return {
            "member": self.name,
            "nodes": len(self.nodes),
            "max_nodes": self.max_nodes,
            "cores_per_node": self.cores,
            "memory_mb_per_node": self.memory_mb,
            "gpus_per_node": self.gpus,
        }

    def log_paths(self, jobid: Any) -> list[str]:
        job = self._jobs.get(jobid)
        if job is None:
            return []
        return sorted({str(path) for path in (job.stdout, job.stderr) if path.exists()})

    async def close(self) -> None:
        for job in list(self._running.values()):
            self._signal(job, signal.SIGKILL)
        if self._memory_watch is not None:
            self._memory_watch.cancel()

    # Scheduling -------------------------------------------------------------------------------

    def _unsatisfiable(self, spec: JobSpec) -> str | None:
        if place(spec, self._largest) is not None:
            return None
        return (
            f"unsatisfiable request: {spec.nodes or 1} node(s), {spec.tasks} task(s) x "
            f"{spec.cores_per_task} core(s), {spec.gpus_per_task} gpu(s) per task, "
            f"{spec.memory_mb or 0} MB; the local member has at most {self.max_nodes} node(s) of "
            f"{self.cores} cores, {self.gpus} gpus, {self.memory_mb} MB "
            "(give the local member more cores, memory, gpus or max_nodes, or ask for less)"
        )

    def _schedule(self) -> None:
        for jobid, job in list(self._pending.items()):
            if all(node.used_cores >= node.cores for node in self.nodes):
                return
            shares = place(job.spec, self.nodes)
            if shares is None:
                continue
            del self._pending[jobid]
            for share in shares:
                share.take(+1)
            job.shares = shares
            self._running[jobid] = job
            self._launch(job)

    def _launch(self, job: _Job) -> None:
        spec = job.spec
        self._event(job.jobid, "alloc")
        environment = {**os.environ, **spec.environment}
        environment.update(
            ENSEMBLE_JOB_ID=str(job.jobid), ENSEMBLE_GROUP=spec.group, FLUX_JOB_SIZE=str(spec.tasks)
        )
        for directory in {job.stdout.parent, job.stderr.parent} - self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)
        with open(job.stdout, "ab") as out, open(job.stderr, "ab") as err:
            for rank in range(spec.tasks):
                environment["FLUX_TASK_RANK"] = str(rank)
                try:
                    process = subprocess.Popen(
                        spec.command,
                        cwd=spec.cwd,
                        env=environment,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                except OSError as error:
                    err.write(f"ensemble: task {rank}: start failed: {error}\n".encode())
                    job.statuses.append(127 << 8)
                    continue
                process.returncode = 0  # reaped through its pidfd below, not by Popen
                job.groups.append(process.pid)
                self._watch_exit(job, process.pid)
        self._event(job.jobid, "start")
        if not job.pids:
            self._finish(job)
            return
        if spec.walltime:
            assert self._loop is not None
            job.timer = self._loop.call_later(
                spec.walltime, self._end, job, "timeout", "resource allocation expired"
            )
        if spec.memory_mb and self._memory_watch is None:
            assert self._loop is not None
            self._memory_watch = self._loop.create_task(self._watch_memory())

    def _watch_exit(self, job: _Job, pid: int) -> None:
        assert self._loop is not None
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            job.pids[pid] = -1
            waiter = self._loop.run_in_executor(None, os.waitpid, pid, 0)
            waiter.add_done_callback(lambda done: self._exited(job, pid, done.result()[1]))
            return
        job.pids[pid] = fd
        self._loop.add_reader(fd, self._reap, job, pid)

    def _reap(self, job: _Job, pid: int) -> None:
        try:
            _, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            status = 0
        self._exited(job, pid, status)

    def _exited(self, job: _Job, pid: int, status: int) -> None:
        fd = job.pids.pop(pid)
        if fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(fd)
            os.close(fd)
        job.statuses.append(status)
        if not job.pids:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        # What a task left running in its process group (a shell's children) ends with the job.
        self._signal(job, signal.SIGKILL)
        if job.timer is not None:
            job.timer.cancel()
        status = next((s for s in job.statuses if s), 0)
        self._running.pop(job.jobid, None)
        for share in job.shares:
            share.take(-1)
        self._event(job.jobid, "finish", {"status": status})
        self._finish_events(job.jobid, ran=True)
        self._schedule()

    def _end(self, job: _Job, kind: str, note: str) -> None:
        """Raise a fatal exception on a running job and stop its processes."""
        if job.ending or job.jobid not in self._running:
            return
        job.ending = True
        self._event(job.jobid, "exception", {"type": kind, "severity": 0, "note": note})
        self._signal(job, signal.SIGTERM)
        assert self._loop is not None
        self._loop.call_later(self.grace_seconds, self._kill_if_running, job)

    def _kill_if_running(self, job: _Job) -> None:
        if job.jobid in self._running:
            self._signal(job, signal.SIGKILL)

    def _signal(self, job: _Job, signum: int) -> None:
        for group in job.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signum)

    async def _watch_memory(self) -> None:
        """Sample the resident memory of jobs with a memory limit; end those over it as oom."""
        try:
            while True:
                limited = {
                    pid: job
                    for job in self._running.values()
                    if job.spec.memory_mb and not job.ending
                    for pid in job.pids
                }
                if not limited:
                    return
                used: dict[int, float] = dict.fromkeys(limited, 0.0)
                for pgid, rss_mb in _resident_by_group():
                    if pgid in used:
                        used[pgid] += rss_mb
                for job in {id(j): j for j in limited.values()}.values():
                    total = sum(used[pid] for pid in job.pids)
                    if job.spec.memory_mb and total > job.spec.memory_mb:
                        self._end(
                            job,
                            "oom",
                            f"memory use {total:.0f} MB exceeded the limit of "
                            f"{job.spec.memory_mb} MB",
                        )
                await asyncio.sleep(MEMORY_CHECK_SECONDS)
        finally:
            self._memory_watch = None

    # Events -----------------------------------------------------------------------------------

    def _event(self, jobid: int, name: str, context: dict[str, Any] | None = None) -> None:
        self._emit(JobEvent(jobid, name, time.time(), context or {}))

    def _finish_events(self, jobid: int, ran: bool) -> None:
        if ran:
            self._event(jobid, "release", {"ranks": "all", "final": True})
            self._event(jobid, "free")
        self._event(jobid, "clean")

    def _output_paths(self, spec: JobSpec, jobid: int) -> tuple[Path, Path]:
        base = self.log_dir / f"{spec.group}-{jobid}"
        stdout = _expand(spec.stdout, jobid) or base.with_suffix(".out")
        stderr = _expand(spec.stderr, jobid) or (
            stdout if spec.stdout else base.with_suffix(".err")
        )
        return stdout, stderr


def _expand(path: str | None, jobid: int) -> Path | None:
    """Flux's `{{id}}` template in output paths."""
    return None if path is None else Path(path.replace("{{id}}", str(jobid)))


def _resident_by_group() -> list[tuple[int, float]]:
    """(process group, resident MB) of every process, read from /proc in one pass."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        found.append((int(fields[2]), int(fields[21]) * PAGE_MB))
    return found
