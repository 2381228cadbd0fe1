"""The Executor: Snakemake jobs go into the ensemble, outcomes come back from its event stream.

Status checks read the outcome each job handle already holds; the core resolves handles from the
member's events, so a check round costs no call to the queue. An outcome also wakes the status
thread at once instead of leaving it to sleep out a polling interval.

Snakemake imports every installed executor plugin to build its command line: the Snakemake
process of every job does, and so does every warm worker. So this module imports the ensemble
core (pydantic, the rules, the state journal) only when an executor is made, not when Snakemake
imports the plugin; a job's Snakemake never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from snakemake_interface_common.exceptions import ApiError, WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.logging import LoggerExecutorInterface
from snakemake_interface_executor_plugins.workflow import WorkflowExecutorInterface

from ensemble_core.errors import EnsembleError
from snakemake_executor_plugin_ensemble.settings import LOG_DIR, STATE_DIR, member_settings

if TYPE_CHECKING:
    from ensemble_core.control.front_door_record import FrontDoorRecord
    from ensemble_core.ensemble import Ensemble
    from ensemble_core.jobs import JobHandle
    from ensemble_core.progress import Progress
    from ensemble_core.spec import JobSpec

#: The longest the status thread sleeps between rounds; an outcome wakes it sooner.
STATUS_INTERVAL = 0.5
#: What Snakemake's scheduler runs on its timers: it wakes itself again one timespan of its
#: rate limiter (`--max-jobs-per-timespan`, a second unless set) after each scheduling round.
SCHEDULER_TIMER = "JobScheduler._schedule_reevalutation.<locals>.<lambda>"


def cancel_scheduler_timers() -> int:
    """Cancel the timers Snakemake's scheduler started to wake itself; how many.

    Each is a non-daemon thread, which the interpreter waits for at its exit: a Snakemake
    process outlives its workflow by up to a second. Call this only once the scheduler is done
    (its executor shut down, or its command line returned): nothing is left for them to wake.
    Other timers are left alone (a `run:` block may have started one)."""
    cancelled = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and (
            getattr(function, "__qualname__", None) == SCHEDULER_TIMER
        ):
            thread.cancel()
            cancelled += 1
    return cancelled


class Wakeup:
    """Lets the ensemble's thread cut short the status thread's sleep when an outcome arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def notify(self, _handle: JobHandle | None = None) -> None:
        with self._lock:
            self._pending = True
            if self._waiter is not None:
                loop, event = self._waiter
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        """Return after `timeout` seconds, or as soon as an outcome arrived since the last wait."""
        event = asyncio.Event()
        with self._lock:
            if self._pending:
                self._pending = False
                return
            self._waiter = (asyncio.get_running_loop(), event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiter = None
                self._pending = False


class Executor(RemoteExecutor):
    """`snakemake --executor ensemble`: each job a JobSpec, the rules applied by the core."""

    def __init__(self, workflow: WorkflowExecutorInterface, logger: LoggerExecutorInterface):
        # RemoteExecutor.__init__ starts the status thread before __post_init__ runs: what that
        # thread touches has to exist first.
        self._wakeup = Wakeup()
        self._ensemble: Ensemble | None = None
        self._handles: dict[int, JobHandle] = {}
        #: The job logs this run has written to (an older run's log there was removed first).
        self._logs: set[str] = set()
        self._closed = False
        self._progress: Progress | None = None
        self._record: FrontDoorRecord | None = None
        super().__init__(workflow, logger)

    def __post_init__(self) -> None:
        from ensemble_core.api import open_ensemble
        from ensemble_core.control.front_door_record import FrontDoorRecord
        from ensemble_core.progress import Progress

        settings = self.workflow.executor_settings
        self._member = settings.member
        try:
            self._ensemble = open_ensemble(
                settings.member,
                settings.rules,
                member_settings(settings),
                members=settings.members,
                defaults={"local": {"log_dir": LOG_DIR}},
                state=settings.state or STATE_DIR,
                fresh=settings.fresh,
                front_door="snakemake",
            )
            if settings.members is not None:
                self._member = self._ensemble.member.name
            if settings.detach and self._ensemble.member.jobs_end_with_controller:
                self._ensemble.close()
                raise EnsembleError(
                    f"--ensemble-detach: the {self._member} member's jobs end with Snakemake; "
                    "detach a workflow on --ensemble-member flux or kubernetes"
                )
        except (EnsembleError, WorkflowError) as error:
            self.wait = False  # let the status thread end
            raise ApiError(f"ensemble executor: {error}") from None
        self._progress = Progress(self._ensemble, write=self.logger.info)
        if settings.report:
            self._record = FrontDoorRecord(self._ensemble, self.workflow.workdir_init)

    @property
    def next_seconds_between_status_checks(self) -> float:
        return STATUS_INTERVAL

    @next_seconds_between_status_checks.setter
    def next_seconds_between_status_checks(self, value: float | None) -> None:
        """Ignored: a check round only reads handles, so it runs as often as outcomes arrive."""

    async def sleep(self) -> None:
        await self._wakeup.wait(STATUS_INTERVAL)

    def run_job(self, job: JobExecutorInterface) -> None:
        from snakemake_executor_plugin_ensemble.jobspec import job_identity, job_spec
        from snakemake_executor_plugin_ensemble.warm import in_process

        assert self._ensemble is not None
        log_file = os.path.abspath(job.logfile_suggestion(LOG_DIR))
        line = self.format_job_exec(job)
        try:
            spec = job_spec(
                job,
                line,
                self.workflow.workdir_init,
                log_file,
                self.workflow.executor_settings.memory_overhead_mb,
            )
        except ValueError as error:
            self._report_error(SubmittedJobInfo(job), f"not submitted: {error}. ")
            return
        spec = self._fit_threads(job, spec)
        identity = job_identity(job)
        self._begin_log(log_file, identity)
        runs_warm = getattr(self._ensemble.member, "runs_warm", None)
        if runs_warm is not None and runs_warm(spec):
            spec = in_process(spec, line)  # a warm worker forks it from a warm Snakemake
        handle = self._ensemble.submit(spec, identity=identity)
        self._handles[handle.key] = handle
        if self._record is not None:
            self._record.follow(handle)
        handle.add_done_callback(self._wakeup.notify)
        self.logger.info(
            f"Submitted {'group job' if job.is_group() else 'job'} {job.jobid} as ensemble job "
            f"{handle.key} ({self._member} member; log: {log_file})."
        )
        self.report_job_submission(
            SubmittedJobInfo(job, external_jobid=str(handle.key), aux={"handle": handle})
        )

    def _begin_log(self, log_file: str, identity: str) -> None:
        """A job's log holds this run's attempts only (a retry appends to its first attempt's):
        an older run's log at the same path goes before the job's first submission here,
        unless the job follows that run's job, which still writes there."""
        if log_file in self._logs:
            return
        self._logs.add(log_file)
        assert self._ensemble is not None
        if not self._ensemble.follows(identity):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(log_file)

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        for job_info in active_jobs:
            handle: JobHandle = job_info.aux["handle"]
            if not handle.done():
                yield job_info
                continue
            self._handles.pop(handle.key, None)
            if handle.outcome is not None and handle.outcome.ok:
                self.report_job_success(job_info)
            else:
                self._report_error(job_info, self._failure(handle), handle.log_paths)

    @property
    def cores(self) -> int | str:
        """`--cores` of each spawned Snakemake: on the local member, the node's cores, so a
        job's threads are what the member gave it, as in Snakemake's local execution."""
        per_node = self._cores_per_node
        return per_node if per_node is not None else super().cores

    @property
    def _cores_per_node(self) -> int | None:
        """The local member's cores per node; None for members whose nodes are not this one."""
        if self._ensemble is None or self._member != "local":
            return None
        return self._ensemble.member.describe().get("cores_per_node")

    def _fit_threads(self, job: JobExecutorInterface, spec: JobSpec) -> JobSpec:
        """As Snakemake's local execution does: a job asking for more threads than the local
        member's node has runs with the node's cores (and says so), instead of never."""
        cores = self._cores_per_node
        if cores is None or spec.tasks > 1 or spec.cores_per_task <= cores:
            return spec
        self.logger.info(
            f"Job {job.jobid} ({job.name}) asks for {spec.cores_per_task} threads; the local "
            f"member's node has {cores} cores: running it with {cores}."
        )
        return spec.model_copy(update={"cores_per_task": cores})

    def _report_error(
        self, job_info: SubmittedJobInfo, message: str, logs: list[str] | None = None
    ) -> None:
        """Report a failure; for group jobs also log the reason, which Snakemake's
        `GroupJob.log_error` drops (the user would see `message: None`)."""
        if job_info.job.is_group():
            self.logger.error(f"Error in group job {job_info.job.jobid}: {message.strip()}")
        self.report_job_error(job_info, msg=message, aux_logs=logs or [])

    def _failure(self, handle: JobHandle) -> str:
        """Why the job failed, with the member's job id and how many attempts the rules made."""
        where = [f"{self._member} job {handle.member_id}"] if handle.member_id is not None else []
        if len(handle.attempts) > 1:
            where.append(f"after {len(handle.attempts)} attempts")
        return f"ensemble: {handle.reason}" + (f" ({', '.join(where)})" if where else "") + ". "

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        """Cancel every job this executor started, not only those Snakemake passes (with
        --ensemble-detach, none: they go on, and the next run follows them)."""
        if self._ensemble is None or self.workflow.executor_settings.detach:
            return
        for handle in list(self._handles.values()):
            if not handle.done():
                self._ensemble.cancel(handle)

    def shutdown(self) -> None:
        """Stop the status thread, close the ensemble (ending what still runs), print a summary.

        The status thread is woken as it is told to end: otherwise Snakemake's shutdown waits
        for it to sleep out its interval (half a second at the end of every run)."""
        with self.lock:
            self.wait = False
        self._wakeup.notify()
        super().shutdown()
        # Snakemake calls this when its scheduler is done: its timers would only keep the
        # process alive after the workflow's end, as they do with every other executor.
        cancel_scheduler_timers()
        if self._ensemble is None or self._closed:
            return
        from ensemble_core.report import summary_table

        self._closed = True
        if self._progress is not None:
            self._progress.close()
        detach = self.workflow.executor_settings.detach
        self._ensemble.close(detach=detach)
        if detach:
            self.logger.info(
                "Ensemble detached: jobs still running go on; the same command follows them."
            )
        self.logger.info("Ensemble summary:\n" + summary_table(self._ensemble.snapshot()))
        if self._record is not None:
            self._write_report(self.workflow.executor_settings.report)

    def _write_report(self, path: str) -> None:
        """The report of the ensemble (--ensemble-report); a failure to write it is logged, for
        the workflow's outcome is what it is."""
        from ensemble_core.report_html import write_run_report

        try:
            jobs = write_run_report(self._record, path)
        except EnsembleError as error:
            self.logger.error(f"ensemble: no report: {error}")
            return
        self.logger.info(f"Ensemble report of {jobs} job(s): {os.path.abspath(path)}")
