"""The local member: real processes on this machine, scheduled like a small Flux instance.

Capacity is a set of virtual nodes (one by default) with the machine's cores and memory. Jobs that
fit run side by side; the rest wait in order (`local_scheduler`). Walltime and memory limits are
enforced, so timeout and oom are real outcomes; a job that no size of this member could ever hold
is refused at once with Flux's unsatisfiable `alloc` exception. Process exits arrive through pidfds
on the event loop: nothing polls, except the memory watch of jobs that set a memory limit.

Whatever goes wrong with one job ends that job (Flux's `exec` exception, then `clean`), never the
member: no callback of the member lets an exception reach the event loop.

The jobs end with the controller, also when it is killed with SIGKILL: a reaper process started
with the member kills every process of its jobs when the controller's end closes its pipe
(`local_lifeline`). A restarted controller submits again what was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent
from ensemble_core.members.base import EmitEvent, Member
from ensemble_core.members.local_environment import TaskEnvironment
from ensemble_core.members.local_lifeline import Lifeline, new_marker
from ensemble_core.members.local_output import OUTPUT_MODES, JobOutput, OutputError, Outputs
from ensemble_core.members.local_scheduler import Capacity, Scheduler, Share
from ensemble_core.members.local_spawn import spawn
from ensemble_core.members.proc_memory import resident_memory
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

MEMORY_CHECK_SECONDS = 0.1
#: Finished jobs whose output files `log_paths` still answers for (the member forgets the rest).
RECENT_JOBS = 1024


def machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


@dataclass(slots=True)
class _Job:
    jobid: int
    spec: JobSpec
    shares: list[Share] = field(default_factory=list)
    output: JobOutput | None = None
    pids: dict[int, int] = field(default_factory=dict)  # pid -> pidfd (or -1)
    groups: list[int] = field(default_factory=list)  # its tasks' process groups, kept after exit
    statuses: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    ending: bool = False  # a fatal exception was raised; its processes are being stopped
    done: bool = False  # `clean` was emitted


class LocalMember(Member):
    """Processes on this machine, with Flux's events and outcomes."""

    name = "local"
    jobs_end_with_controller = True

    def __init__(
        self,
        cores: int | None = None,
        memory_mb: int | None = None,
        gpus: int = 0,
        nodes: int = 1,
        max_nodes: int | None = None,
        log_dir: str = "ensemble-logs",
        grace_seconds: float = 2.0,
        output: str = "job",
        reserve_after: float | None = 60.0,
    ) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.memory_mb = memory_mb or machine_memory_mb()
        self.gpus = gpus
        self.max_nodes = max(max_nodes or nodes, nodes)
        if min(self.cores, self.memory_mb, nodes) < 1 or gpus < 0:
            raise MemberError(
                "local member: cores, memory and nodes must be at least 1 and gpus at least 0"
            )
        if output not in OUTPUT_MODES:
            raise MemberError(f"output: must be one of {', '.join(OUTPUT_MODES)} (got {output!r})")
        if reserve_after is not None and not 0 <= reserve_after < math.inf:
            raise MemberError(
                f"reserve_after: must be 0 or more seconds, or null to never reserve "
                f"(got {reserve_after!r})"
            )
        self._scheduler = Scheduler(
            Capacity(self.cores, self.memory_mb, self.gpus), nodes, self.max_nodes, reserve_after
        )
        self.log_dir = Path(log_dir)
        self.output = output
        self.reserve_after = reserve_after
        self.grace_seconds = grace_seconds
        self._outputs = Outputs(self.log_dir, output)
        self._marker = new_marker()
        self._environment = TaskEnvironment({self._marker: str(os.getpid())})
        self._lifeline: Lifeline | None = None
        self._ids = itertools.count(1)
        self._jobs: dict[int, _Job] = {}  # every job not yet clean
        self._running: dict[int, _Job] = {}
        self._recent: OrderedDict[int, list[str]] = OrderedDict()
        self._emit: EmitEvent = lambda event: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._memory_watch: asyncio.Task[None] | None = None
        self._memory_watch_failed = False
        self._scheduling = False
        self._again = False
        self._closed = False

    @property
    def nodes(self) -> list[Any]:
        return self._scheduler.nodes

    @property
    def output_dir(self) -> Path:
        """This run's directory under log_dir (once started): its jobs' files go there."""
        return self._outputs.run_dir

    @property
    def reaper_pid(self) -> int | None:
        """The process that ends the jobs if this one is killed, while the member runs."""
        return None if self._lifeline is None else self._lifeline.pid

    # Member protocol --------------------------------------------------------------------------

    async def start(self, emit: EmitEvent) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        try:
            self._outputs.start()
        except OutputError as error:
            raise MemberError(f"local member: {error}") from None
        self._lifeline = Lifeline(self._marker, self._outputs.run_dir)
        try:
            self._lifeline.start(self._loop)
        except MemberError:
            self._outputs.close()
            raise

    async def submit(self, spec: JobSpec) -> int:
        if self._closed:
            raise MemberError("the local member is closed: it starts no more jobs")
        jobid = next(self._ids)
        job = _Job(jobid, spec)
        self._jobs[jobid] = job
        self._event(jobid, "submit", {"urgency": 16, "flags": 0, "version": 1})
        self._event(jobid, "validate")
        if not self._scheduler.fits_ever(spec):
            why = self._why(spec)
            self._event(jobid, "exception", {"type": "alloc", "severity": 0, "note": why})
            self._clean(job)
            return jobid
        self._event(jobid, "depend")
        self._event(jobid, "priority", {"priority": 16})
        shares = self._scheduler.submit(jobid, spec)
        if shares is not None:
            self._guarded(job, self._launch, job, shares)
        return jobid

    async def cancel(self, jobid: Any) -> None:
        job = self._jobs.get(jobid)
        if job is None:
            return
        if self._scheduler.cancel(jobid):
            self._event(jobid, "exception", {"type": "cancel", "severity": 0, "note": "cancelled"})
            self._clean(job)
            if self._scheduler.unsettled:
                self._schedule()
        elif jobid in self._running:
            self._end(job, "cancel", "cancelled")

    async def grow(self, value: int) -> str:
        added = self._scheduler.grow(value)
        self._schedule()
        size = len(self.nodes)
        if added < value:
            return f"grew by {added} node(s) to {size}: max_nodes is {self.max_nodes}"
        return f"grew by {added} node(s) to {size}"

    async def shrink(self, value: int) -> str:
        removed = self._scheduler.shrink(value)
        if self._scheduler.unsettled:
            self._schedule()
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
            **({"output_dir": str(self.output_dir)} if self.output_dir.is_dir() else {}),
        }

    def log_paths(self, jobid: Any) -> list[str]:
        """The files holding the job's output (empty ones are removed at its end); answered for
        jobs not yet clean and for the last RECENT_JOBS finished jobs that left output."""
        job = self._jobs.get(jobid)
        if job is None:
            return list(self._recent.get(jobid, ()))
        return job.output.paths() if job.output is not None else []

    async def close(self) -> None:
        """Kill what still runs and close every output; nothing starts after this. The reaper
        is told the jobs are ended, and exits."""
        self._closed = True
        for job in list(self._running.values()):
            self._signal(job, signal.SIGKILL)
            self._finish_output(job)
        if self._memory_watch is not None:
            self._memory_watch.cancel()
        self._outputs.close()
        if self._lifeline is not None:
            await self._lifeline.close()

    # Scheduling -------------------------------------------------------------------------------

    def _why(self, spec: JobSpec) -> str:
        return (
            f"unsatisfiable request: {spec.nodes or 1} node(s), {spec.tasks} task(s) x "
            f"{spec.cores_per_task} core(s), {spec.gpus_per_task} gpu(s) per task, "
            f"{spec.memory_mb or 0} MB; the local member has at most {self.max_nodes} node(s) of "
            f"{self.cores} cores, {self.gpus} gpus, {self.memory_mb} MB "
            "(give the local member more cores, memory, gpus or max_nodes, or ask for less)"
        )

    def _schedule(self) -> None:
        """Start what fits now. A job that ends while its siblings launch (all its tasks failed
        to start) asks for another pass rather than re-entering this one."""
        if self._scheduling or self._closed:
            self._again = True
            return
        self._scheduling = True
        try:
            self._again = True
            while self._again:
                self._again = False
                for jobid, shares in self._scheduler.schedule():
                    job = self._jobs[jobid]
                    self._guarded(job, self._launch, job, shares)
        finally:
            self._scheduling = False

    def _launch(self, job: _Job, shares: list[Share]) -> None:
        spec = job.spec
        job.shares = shares
        self._running[job.jobid] = job
        self._event(job.jobid, "alloc")
        output = job.output = self._outputs.for_job(job.jobid, spec)
        environment = self._environment.for_job(job.jobid, spec)
        for rank in range(spec.tasks):
            environment[b"FLUX_TASK_RANK"] = b"%d" % rank
            try:
                stdout, stderr = output.open()
            except OutputError as error:
                self._abort(job, str(error))
                return
            try:
                pid = spawn(spec.command, environment, spec.cwd, stdout, stderr)
            except (OSError, ValueError) as error:
                output.note(f"ensemble: task {rank}: start failed: {error}\n")
                job.statuses.append(127 << 8)
                continue
            job.groups.append(pid)
            self._watch_exit(job, pid)
        assert self._loop is not None
        output.started(self._loop, lambda why: self._abort(job, f"output: {why}"))
        self._event(job.jobid, "start")
        if not job.pids:
            self._finish(job)
            return
        if spec.walltime:
            job.timer = self._loop.call_later(
                spec.walltime, self._guarded, job, self._end, job, "timeout",
                "resource allocation expired",
            )  # fmt: skip
        if spec.memory_mb and self._memory_watch is None:
            self._memory_watch = self._loop.create_task(self._watch_memory())

    def _watch_exit(self, job: _Job, pid: int) -> None:
        assert self._loop is not None
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            job.pids[pid] = -1
            waiter = self._loop.run_in_executor(None, os.waitpid, pid, 0)
            waiter.add_done_callback(
                lambda done: self._guarded(job, self._exited, job, pid, _status(done))
            )
            return
        job.pids[pid] = fd
        self._loop.add_reader(fd, self._guarded, job, self._reap, job, pid)

    def _reap(self, job: _Job, pid: int) -> None:
        try:
            _, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            status = 0
        self._exited(job, pid, status)

    def _exited(self, job: _Job, pid: int, status: int) -> None:
        fd = job.pids.pop(pid, -1)
        if fd >= 0:
            assert self._loop is not None
            self._loop.remove_reader(fd)
            os.close(fd)
        if job.done:
            return  # the job was ended for an error; this only reaps what it left
        job.statuses.append(status)
        if not job.pids:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        # What a task left running in its process group (a shell's children) ends with the job.
        self._signal(job, signal.SIGKILL)
        if job.timer is not None:
            job.timer.cancel()
        status = next((s for s in job.statuses if s), 0)
        self._finish_output(job)
        self._release(job)
        self._event(job.jobid, "finish", {"status": status})
        self._event(job.jobid, "release", {"ranks": "all", "final": True})
        self._event(job.jobid, "free")
        self._clean(job)
        self._schedule()

    def _end(self, job: _Job, kind: str, note: str) -> None:
        """Raise a fatal exception on a running job and stop its processes."""
        if job.ending or job.done or job.jobid not in self._running:
            return
        job.ending = True
        self._event(job.jobid, "exception", {"type": kind, "severity": 0, "note": note})
        self._signal(job, signal.SIGTERM)
        assert self._loop is not None
        self._loop.call_later(self.grace_seconds, self._guarded, job, self._kill_if_running, job)

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
                try:
                    self._check_memory(limited)
                except Exception:  # a task of the loop: nothing may escape into it
                    if not self._memory_watch_failed:
                        log.exception("local member: the memory watch failed (it goes on)")
                    self._memory_watch_failed = True
                await asyncio.sleep(MEMORY_CHECK_SECONDS)
        finally:
            self._memory_watch = None

    def _check_memory(self, limited: dict[int, _Job]) -> None:
        used: dict[int, float] = dict.fromkeys(limited, 0.0)
        for _, pgid, rss_mb in resident_memory():
            if pgid in used:
                used[pgid] += rss_mb
        for job in {id(j): j for j in limited.values()}.values():
            total = sum(used.get(pid, 0.0) for pid in job.pids)
            if job.spec.memory_mb and total > job.spec.memory_mb:
                self._guarded(
                    job, self._end, job, "oom",
                    f"memory use {total:.0f} MB exceeded the limit of {job.spec.memory_mb} MB",
                )  # fmt: skip

    # Containment ------------------------------------------------------------------------------

    def _guarded(self, job: _Job, action: Callable[..., None], *args: Any) -> None:
        """Run one step of a job; an error in it ends that job, never the member or the loop."""
        try:
            action(*args)
        except Exception as error:
            log.exception("local member: job %s: %s", job.jobid, error)
            self._abort(job, f"local member error: {error}")

    def _abort(self, job: _Job, note: str) -> None:
        """End the job at once for an error: Flux's `exec` exception, then `clean`. Its processes
        are killed; their exits are still reaped, and ignored."""
        if job.done:
            return
        self._signal(job, signal.SIGKILL)
        if job.timer is not None:
            job.timer.cancel()
        self._event(job.jobid, "exception", {"type": "exec", "severity": 0, "note": note})
        self._finish_output(job)
        held = bool(job.shares)
        self._release(job)
        if held:
            self._event(job.jobid, "release", {"ranks": "all", "final": True})
            self._event(job.jobid, "free")
        self._clean(job)
        self._schedule()

    def _finish_output(self, job: _Job) -> None:
        if job.output is None:
            return
        try:
            job.output.finish()
        except OSError as error:
            log.error("local member: job %s: output: %s", job.jobid, error)

    def _release(self, job: _Job) -> None:
        self._running.pop(job.jobid, None)
        if job.shares:
            self._scheduler.release(job.shares)
            job.shares = []

    # Events -----------------------------------------------------------------------------------

    def _event(self, jobid: int, name: str, context: dict[str, Any] | None = None) -> None:
        try:
            self._emit(JobEvent(jobid, name, time.time(), context or {}))
        except Exception:
            # The receiver's error is its own; the member's state must still move on.
            log.exception("local member: the handler of job %s's %s event raised", jobid, name)

    def _clean(self, job: _Job) -> None:
        """The job's last event; the member forgets it but for where its output is."""
        job.done = True
        self._event(job.jobid, "clean")
        del self._jobs[job.jobid]
        paths = job.output.paths() if job.output is not None else []
        if paths:
            self._recent[job.jobid] = paths
            if len(self._recent) > RECENT_JOBS:
                self._recent.popitem(last=False)


def _status(done: asyncio.Future[tuple[int, int]]) -> int:
    try:
        return done.result()[1]
    except ChildProcessError:
        return 0
