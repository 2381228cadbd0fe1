"""The Flux member: JobSpecs submitted with flux-python, their events read from one journal stream.

flux-python is imported only when the member starts, so the core runs without a Flux install. Flux
handles are not thread-safe, so the member uses two: one owned by a single command thread
(submissions, cancels, drain RPCs) and one owned by the event thread (`flux_stream.EventStream`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent
from ensemble_core.members.base import TOKEN_ATTRIBUTE, EmitEvent, Member
from ensemble_core.members.flux_oom import find_report as find_oom_report
from ensemble_core.members.flux_oom import killed_by_sigkill
from ensemble_core.members.flux_stream import EventStream, eventlog_events
from ensemble_core.spec import JobSpec
from ensemble_core.translate.flux import attribute_fields, to_flux

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "pip install 'ensemble-executors[flux]' (flux-python and ply); they need libflux-core.so "
    "from a Flux install (spack install flux-core, your site's Flux, or a package of flux-core)"
)
#: Connection errors after which the command thread opens a new handle for the next call.
_CONNECTION_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ECONNREFUSED}
#: A submission's result, handed from the command thread to the loop:
#: (output paths, the submitter's future, the job id or None, the error or None).
Submitted = tuple[list[str], "asyncio.Future[int]", int | None, Exception | None]
#: Requests to the job manager in flight at once while adopting jobs.
LOOKUP_BATCH = 512
#: Its answers that mean "no such job of ours": never known ("unknown job"), purged, or
#: another user's.
_NOT_THERE = {errno.EINVAL, errno.ENOENT, errno.EPERM}


class Adopted(NamedTuple):
    """What the instance keeps of a job: its token, output files and eventlog so far."""

    token: str | None
    paths: list[str]
    events: list[JobEvent]


def import_flux() -> ModuleType:
    """flux-python, imported on first use, or a MemberError saying what to install."""
    try:
        import flux
        import flux.constants
        import flux.job
    except ImportError as exc:
        text = str(exc)
        if "libflux" in text:
            raise MemberError(
                f"flux-python is installed but cannot load libflux-core ({text}). Install "
                "flux-core (spack install flux-core, your site's Flux module, or a flux-core "
                "package) and make its lib directory visible (LD_LIBRARY_PATH)"
            ) from None
        if exc.name in ("flux", "_flux"):
            raise MemberError(f"flux-python is not installed. {INSTALL_HINT}") from None
        raise MemberError(f"flux-python cannot be imported ({text}). {INSTALL_HINT}") from None
    except OSError as exc:
        raise MemberError(
            f"flux-python cannot load libflux-core ({exc}). Install flux-core from a Flux install "
            "and make its lib directory visible (LD_LIBRARY_PATH)"
        ) from None
    return flux


def connect(flux: ModuleType, uri: str | None) -> Any:
    """A handle on the instance at `uri` (else FLUX_URI), or a MemberError saying how to get one."""
    try:
        return flux.Flux(uri) if uri else flux.Flux()
    except OSError as exc:
        where = uri or os.environ.get("FLUX_URI")
        place = f"at {where}" if where else "(FLUX_URI is not set and there is no system instance)"
        raise MemberError(
            f"cannot connect to a Flux instance {place}: {exc.strerror or exc}. Start one with "
            "`flux start` (or get one with `flux alloc` / `flux batch`) and run inside it, or set "
            "FLUX_URI or the member's flux_uri setting to a running instance's URI"
        ) from None


def decode_idset(text: str) -> set[int]:
    """The ranks of an RFC 22 idset such as "0-3,5" (brackets allowed)."""
    ranks: set[int] = set()
    for part in text.strip().strip("[]").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        ranks.update(range(int(first), int(last or first) + 1))
    return ranks


def encode_idset(ranks: set[int] | list[int]) -> str:
    """The RFC 22 idset of `ranks`, with ranges: [1, 2, 3, 5] -> "1-3,5"."""
    parts: list[str] = []
    for rank in sorted(ranks):
        if parts and parts[-1].rpartition("-")[2] == str(rank - 1):
            parts[-1] = f"{parts[-1].partition('-')[0]}-{rank}"
        else:
            parts.append(str(rank))
    return ",".join(parts)


class FluxMember(Member):
    """Runs JobSpecs on a Flux instance; one journal stream reports every job's events.

    The journal shows every job of the instance. This member forwards only events of jobs it
    submitted: events of unknown ids are held while a submission is in flight (their events can
    arrive before `submit_async` returns the id) and released when the id becomes known; they
    are dropped as soon as every submission that was in flight when they came has its id, so
    they can only be someone else's. After a reconnect it replays the backlog and drops, per job,
    every (name, timestamp) it already delivered; a job whose `clean` it delivered is forgotten,
    so nothing of a finished job stays behind.

    Failures stay with their job: a submission or cancel Flux refuses raises `MemberError` for
    that call, and an event the member or the controller cannot handle ends that job alone
    (`exception` of type `member`, then `clean`; the Flux job is cancelled). Only an event stream
    that cannot be resumed within `reconnect_timeout` seconds concerns every job: the member then
    calls `on_lost`.

    Each job carries the controller's token (`TOKEN_ATTRIBUTE`) as a user attribute of its
    jobspec, so a restarted controller's member finds it again (`adopt`). `close` leaves every
    job as it is: the controller cancels the jobs it wants gone before it closes the member.
    """

    name = "flux"

    def __init__(
        self,
        flux_uri: str | None = None,
        reconnect_delay: float = 1.0,
        reconnect_timeout: float = 60.0,
        batch_size: int = 512,
        cancel_reason: str = "cancelled by the ensemble",
        inherit_environment: bool = True,
        undrain_on_close: bool = True,
    ) -> None:
        self.flux_uri = flux_uri
        self.undrain_on_close = undrain_on_close
        self.inherit_environment = inherit_environment
        self.reconnect_delay = reconnect_delay
        self.reconnect_timeout = reconnect_timeout
        self.batch_size = batch_size
        self.cancel_reason = cancel_reason
        self._flux: ModuleType | None = None
        self._handle: Any = None
        self._commands = concurrent.futures.ThreadPoolExecutor(1, "flux-member-commands")
        self._outbox: deque[tuple[str, list[str], asyncio.Future[int]]] = deque()
        self._stream: EventStream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._emit: EmitEvent | None = None
        self._issued = 0  # submissions handed to the command thread, in order
        self._resolved = 0  # of those, how many have their id (or their error), in order
        self._ours: set[int] = set()
        self._seen: dict[int, set[tuple[str, float]]] = {}
        self._stash: dict[int, tuple[int, list[JobEvent]]] = {}
        self._releasing: dict[int, list[JobEvent]] = {}  # ids whose submitter has not resumed
        self._outputs: dict[int, list[str]] = {}
        self._sigkilled: set[int] = set()
        self._drained: list[int] = []
        self._info: dict[str, Any] = {}
        self._started = False
        self._lost: str | None = None
        self._closed = False
        self._drain_reason = f"ensemble shrink (pid {os.getpid()})"

    async def start(self, emit: EmitEvent) -> None:
        self._flux = import_flux()
        self._loop = asyncio.get_running_loop()
        self._emit = emit
        self._handle = await self._in_commands(self._open)
        self._info = await self._in_commands(self._read_info)
        stream_handle = await self._in_commands(self._open)
        self._stream = EventStream(
            self._flux,
            self._open,
            self._deliver_threadsafe,
            self._lost_threadsafe,
            reconnect_delay=self.reconnect_delay,
            give_up_after=self.reconnect_timeout,
            batch_size=self.batch_size,
        )
        self._stream.start(stream_handle)
        # Jobs submitted before the journal request is in place and ended before it arrives
        # would never be reported: return only once the job manager has answered it.
        if not await asyncio.to_thread(self._stream.wait_live, self.reconnect_timeout):
            reason = self._stream.lost_reason or (
                f"the Flux job journal did not answer within {self.reconnect_timeout:.0f} s"
            )
            await asyncio.to_thread(self._stream.stop)
            raise MemberError(f"the Flux member cannot follow its jobs: {reason}")
        self._started = True

    async def submit(self, spec: JobSpec) -> int:
        if self._loop is None:
            raise MemberError("the Flux member is not started. Call start() before submit()")
        if self._lost is not None:
            raise MemberError(f"the Flux member lost its event stream: {self._lost}")
        try:
            jobspec = json.dumps(self.jobspec(spec))
        except (ValueError, TypeError) as exc:
            raise MemberError(f"Flux cannot run this job: {exc}") from None
        paths = output_paths(spec.cwd, spec.stdout, spec.stderr)
        for path in paths:  # Flux's job shell opens output files but makes no directory
            with contextlib.suppress(OSError):
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._issued += 1
        self._outbox.append((jobspec, paths, waiter))
        self._commands.submit(self._send_outbox)
        return await waiter

    def jobspec(self, spec: JobSpec) -> dict[str, Any]:
        """The Flux jobspec submitted for `spec`: like `flux submit`, the job runs in this process's
        directory and environment (the spec's variables win) unless the spec sets its own."""
        document = to_flux(spec).document
        system = document["attributes"]["system"]
        system.setdefault("cwd", os.getcwd())
        if self.inherit_environment:
            system["environment"] = {**os.environ, **system.get("environment", {})}
        return document

    async def cancel(self, jobid: Any) -> None:
        try:
            number = int(jobid)
        except (TypeError, ValueError):
            raise MemberError(f"the Flux member has no job {jobid!r}") from None
        await self._in_commands(self._cancel, number)

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Follow jobs a previous controller submitted: by id where it was learned, else by the
        token in their jobspec (the user's jobs are listed, newest first, until every token is
        found). A job is ours only if its jobspec carries its token. Once this returns, each
        found job's eventlog so far, as the job manager holds it, is emitted, then what the
        journal brought since the job was looked for (the member drops what repeats); from then
        on the job is followed like one the member submitted."""
        if self._loop is None or self._stream is None:
            raise MemberError("the Flux member is not started. Call start() before adopt()")
        ids: dict[str, int] = {token: int(jobid) for jobid, token in jobs if jobid is not None}
        lost = {token for jobid, token in jobs if jobid is None}
        if lost:
            ids |= await self._in_commands(self._find_tokens, lost, set(ids.values()))
        for jobid in ids.values():  # the stream's events of these jobs are held from now on
            self._ours.add(jobid)
            self._releasing.setdefault(jobid, [])
            self._stream.watch(jobid)
        try:
            kept = await self._in_commands(self._read_jobs, list(ids.values()))
        except BaseException:
            for jobid in ids.values():
                self._forget(jobid)
            raise
        found: dict[str, Any] = {}
        for token, jobid in ids.items():
            job = kept.get(jobid)
            if job is not None and job.token == token:
                found[token] = jobid
        for jobid in set(ids.values()) - set(found.values()):
            self._forget(jobid)
        for jobid in found.values():
            job = kept[jobid]
            if job.paths:
                self._outputs[jobid] = job.paths
            self._releasing[jobid] = job.events + self._releasing[jobid]
            # After this returns, as for a submission: the controller knows the id by then.
            self._loop.call_soon(self._release, jobid)
        log.info("flux member: adopted %d of %d job(s)", len(found), len(jobs))
        return found

    async def grow(self, value: int) -> str:
        return await self._in_commands(self._resize, self._undrain, value)

    async def shrink(self, value: int) -> str:
        return await self._in_commands(self._resize, self._drain, value)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"member": self.name, "uri": self._uri(), **self._info}
        if self._stream is not None:
            info["events"] = self._stream.mode
            if self._stream.reconnects:
                info["reconnects"] = self._stream.reconnects
        if self._lost is not None:
            info["lost"] = self._lost
        if self._drained:
            info["drained_by_member"] = encode_idset(self._drained)
        return info

    def log_paths(self, jobid: Any) -> list[str]:
        """The job's output files, while the job is active and as its `clean` is emitted."""
        return list(self._outputs.get(int(jobid), []))

    @property
    def held(self) -> dict[str, int]:
        """Per-job state the member holds now: its active jobs, and events of unknown jobs while
        submissions are in flight. A finished job leaves nothing behind (for tests and
        diagnostics)."""
        return {
            "jobs": len(self._ours),
            "seen": len(self._seen),
            "outputs": len(self._outputs),
            "sigkilled": len(self._sigkilled),
            "stashed": len(self._stash),
            "releasing": len(self._releasing),
            "followed": self._stream.following if self._stream is not None else 0,
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            await asyncio.to_thread(self._stream.stop)
        if self._drained and self.undrain_on_close:
            said = await self._in_commands(self._resize, self._undrain, len(self._drained))
            log.info("closing: %s", said)
        await asyncio.to_thread(self._commands.shutdown, True)
        self._handle = None

    # Command thread: every use of the command handle happens here.

    async def _in_commands(self, func: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._commands, func, *args)

    def _open(self) -> Any:
        assert self._flux is not None
        return connect(self._flux, self.flux_uri)

    def _read_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for key, attr in (("flux_version", "version"), ("size", "size")):
            with contextlib.suppress(OSError):
                info[key] = self._handle.attr_get(attr)
        return info

    def _send_outbox(self) -> None:
        """Send every waiting submission before reading any id, so requests overlap."""
        assert self._flux is not None and self._loop is not None
        batch = []
        while self._outbox:
            batch.append(self._outbox.popleft())
        results: list[Submitted] = []
        try:
            sent: list[tuple[Any, list[str], asyncio.Future[int]]] = []
            for jobspec, paths, waiter in batch:
                try:
                    future = self._flux.job.submit_async(self._handle, jobspec)
                except Exception as exc:
                    future = exc
                sent.append((future, paths, waiter))
            for future, paths, waiter in sent:
                try:
                    if isinstance(future, Exception):
                        raise future
                    results.append((paths, waiter, int(future.get_id()), None))
                except Exception as exc:
                    results.append((paths, waiter, None, exc))
                    if isinstance(exc, OSError):
                        self._reopen_if_disconnected(exc)
        finally:  # every submitter gets an answer, in the order they were issued
            answered = {id(waiter) for _paths, waiter, _jobid, _exc in results}
            cut = RuntimeError("the submission was interrupted")
            results += [(p, w, None, cut) for _js, p, w in batch if id(w) not in answered]
            if results:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    self._loop.call_soon_threadsafe(self._submitted, results)

    def _reopen_if_disconnected(self, exc: OSError) -> None:
        if exc.errno in _CONNECTION_ERRNOS:
            with contextlib.suppress(MemberError):
                self._handle = self._open()

    def _cancel(self, jobid: int) -> None:
        assert self._flux is not None
        try:
            self._flux.job.cancel_async(self._handle, jobid, self.cancel_reason).get()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the job is already inactive: nothing left to cancel
            self._reopen_if_disconnected(exc)
            raise MemberError(f"Flux could not cancel job {jobid}: {exc.strerror or exc}") from None
        except Exception as exc:
            raise MemberError(f"Flux could not cancel job {jobid}: {exc}") from None

    def _cancel_quietly(self, jobid: int) -> None:
        try:
            self._cancel(jobid)
        except MemberError as exc:
            log.warning("%s", exc)

    def _getattr(self, ids: list[int], attrs: list[str]) -> Iterator[tuple[int, dict | None]]:
        """(id, the job's `attrs` as the job manager holds them, or None if it has no such job
        of ours), with up to `LOOKUP_BATCH` requests in flight. The job manager, not the KVS:
        an event it sent on the journal is in its eventlog already, while its KVS commit may
        still be under way."""
        for first in range(0, len(ids), LOOKUP_BATCH):
            chunk = ids[first : first + LOOKUP_BATCH]
            futures = [
                self._handle.rpc("job-manager.getattr", {"id": jobid, "attrs": attrs})
                for jobid in chunk
            ]
            for jobid, future in zip(chunk, futures, strict=True):
                try:
                    yield jobid, future.get()
                except OSError as exc:
                    if exc.errno not in _NOT_THERE:
                        raise
                    yield jobid, None

    def _find_tokens(self, tokens: set[str], skip: set[int]) -> dict[str, int]:
        """{token: id} of the user's jobs whose jobspec carries one of `tokens`."""
        assert self._flux is not None
        listing = self._flux.job.job_list(self._handle, max_entries=0, attrs=[]).get_jobs()
        candidates = sorted({int(job["id"]) for job in listing} - skip, reverse=True)
        found: dict[str, int] = {}
        for jobid, answer in self._getattr(candidates, ["jobspec"]):
            token = _token(answer)
            if token in tokens and token not in found:
                found[token] = jobid
                if len(found) == len(tokens):
                    break
        return found

    def _read_jobs(self, ids: list[int]) -> dict[int, Adopted]:
        """What the instance keeps of each of these jobs (those it has)."""
        kept: dict[int, Adopted] = {}
        for jobid, answer in self._getattr(ids, ["jobspec", "eventlog"]):
            if answer is not None:
                fields = attribute_fields(_jobspec(answer).get("attributes") or {})
                paths = output_paths(fields["cwd"], fields["stdout"], fields["stderr"])
                events = eventlog_events(jobid, answer.get("eventlog") or [])
                kept[jobid] = Adopted(_token(answer), paths, events)
        return kept

    def _find_oom(self, jobid: int, paths: list[str]) -> str | None:
        try:
            return find_oom_report(self._handle, jobid, paths)
        except Exception as exc:
            log.warning(
                "could not read the output of Flux job %s to look for the oom plugin's report "
                "(%s); its exit code 137 stands",
                jobid,
                exc,
            )
            return None

    def _ranks(self) -> tuple[set[int], set[int], set[int]]:
        """(online ranks, ranks drained or excluded, ranks drained by this member) as the resource
        module reports them now; a drain is ours if it carries our reason."""
        status = self._handle.rpc("resource.status", nodeid=0).get()
        unavailable = decode_idset(status.get("exclude") or "")
        ours: set[int] = set()
        for ranks, entry in (status.get("drain") or {}).items():
            unavailable |= decode_idset(ranks)
            if (entry or {}).get("reason") == self._drain_reason:
                ours |= decode_idset(ranks)
        return decode_idset(status.get("online") or ""), unavailable, ours

    def _resize(self, action: Any, count: int) -> str:
        """Run a drain or undrain; a refusal by Flux becomes the sentence the summary shows."""
        try:
            return action(count)
        except OSError as exc:
            verb = "shrink" if action == self._drain else "grow"
            return f"flux member could not {verb}: {exc.strerror or exc}"

    def _drain(self, count: int) -> str:
        if count < 1:
            return "flux member: nothing to shrink (asked for fewer than 1 node)"
        online, unavailable, _ours = self._ranks()
        candidates = sorted(online - unavailable - {0}, reverse=True)[:count]
        if not candidates:
            return "flux member cannot shrink: every online rank but 0 is drained or excluded"
        targets = encode_idset(candidates)
        payload = {"targets": targets, "reason": self._drain_reason}
        self._handle.rpc("resource.drain", payload, nodeid=0).get()
        self._drained.extend(candidates)
        short = "" if len(candidates) == count else f" (asked for {count}; rank 0 is never drained)"
        return f"flux member drained ranks {targets}{short}: running jobs finish, no new ones start"

    def _undrain(self, count: int) -> str:
        if count < 1:
            return "flux member: nothing to grow (asked for fewer than 1 node)"
        _online, _unavailable, ours = self._ranks()
        self._drained = [rank for rank in self._drained if rank in ours]
        if not self._drained:
            return (
                "flux member cannot grow: no rank it drained is still drained by it, and a "
                "running Flux instance cannot add brokers"
            )
        chosen = self._drained[-count:]
        targets = encode_idset(chosen)
        self._handle.rpc("resource.undrain", {"targets": targets}, nodeid=0).get()
        self._drained = self._drained[: len(self._drained) - len(chosen)]
        short = "" if len(chosen) == count else f" (asked for {count}; it had drained only those)"
        return f"flux member undrained ranks {targets}{short}"

    # Loop thread: job bookkeeping and emission.

    def _submitted(self, results: list[Submitted]) -> None:
        assert self._loop is not None
        for paths, waiter, jobid, exc in results:
            self._resolved += 1
            if jobid is None:
                if not waiter.done():
                    reason = getattr(exc, "strerror", None) or exc
                    waiter.set_exception(MemberError(f"Flux refused the job: {reason}"))
                continue
            self._ours.add(jobid)
            if paths:
                self._outputs[jobid] = paths
            if self._stream is not None:
                self._stream.watch(jobid)
            _ticket, held = self._stash.pop(jobid, (0, []))
            self._releasing[jobid] = held
            if not waiter.done():
                waiter.set_result(jobid)
            # The submitter resumes first (its wake-up is queued before this), so the controller
            # knows the id, and can ask for log_paths, before the job's first event reaches it.
            self._loop.call_soon(self._release, jobid)
        self._prune_stash()

    def _release(self, jobid: int) -> None:
        held = self._releasing.pop(jobid, None)
        if held:
            self._deliver(held)

    def _prune_stash(self) -> None:
        """Drop held events once every submission in flight when they came has its id: they
        are then another job's (another user's, or one of ours that is over)."""
        while self._stash:
            jobid, (ticket, _events) = next(iter(self._stash.items()))
            if ticket > self._resolved:
                return
            del self._stash[jobid]

    def _deliver_threadsafe(self, batch: list[JobEvent]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed without closing the member
            self._loop.call_soon_threadsafe(self._deliver, batch)

    def _lost_threadsafe(self, reason: str) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stream_lost, reason)

    def _stream_lost(self, reason: str) -> None:
        self._lost = reason
        if not self._started or self._closed:
            return  # start() reports it, or nobody listens any more
        try:
            self.on_lost(reason)
        except Exception:
            log.exception("the controller failed while told that the Flux member is lost")

    def _deliver(self, batch: list[JobEvent]) -> None:
        """Forward our jobs' events, hold those of unknown jobs; one job's trouble ends it alone."""
        for event in batch:
            jobid = event.jobid
            try:
                if jobid in self._releasing:
                    self._releasing[jobid].append(event)
                elif jobid in self._ours:
                    self._forward(event)
                elif self._issued > self._resolved:
                    held = self._stash.get(jobid)
                    if held is None:
                        self._stash[jobid] = (self._issued, [event])
                    else:
                        held[1].append(event)
            except Exception as exc:
                log.exception("the Flux member failed on event %s of job %s", event.name, jobid)
                self._fail(jobid, f"the flux member could not handle its {event.name} event: {exc}")

    def _forward(self, event: JobEvent) -> None:
        """Emit an event of one of our jobs once, however often a replay repeats it."""
        jobid = event.jobid
        seen = self._seen.setdefault(jobid, set())
        key = (event.name, event.timestamp)
        if key in seen:
            return
        seen.add(key)
        name = event.name
        if name == "finish" and killed_by_sigkill(int(event.context.get("status", 0))):
            self._sigkilled.add(jobid)
        elif name == "clean" and jobid in self._sigkilled:
            self._look_for_oom(event)
            return
        if not self._emit_or_fail(event):
            return
        if name == "clean":
            self._forget(jobid)
        elif name == "exception" and event.context.get("type") == "member":
            self._fail(jobid, None)  # the stream could not read an event of this job

    def _emit_or_fail(self, event: JobEvent) -> bool:
        """Emit; if the controller raises, end that job (it cannot be followed reliably)."""
        assert self._emit is not None
        try:
            self._emit(event)
            return True
        except Exception as exc:
            log.exception("the ensemble failed on event %s of Flux job %s", event.name, event.jobid)
            self._fail(event.jobid, f"the ensemble could not handle its {event.name} event: {exc}")
            return False

    def _fail(self, jobid: int, note: str | None) -> None:
        """End one job of ours now: a fatal `member` exception (unless sent), `clean`, and a
        cancel of the Flux job so that nothing is left running."""
        if jobid not in self._ours:
            return
        assert self._emit is not None
        self._ours.discard(jobid)  # first, so that a failure below cannot come back here
        now = time.time()
        events = [JobEvent(jobid, "clean", now)]
        if note is not None:
            context = {"type": "member", "severity": 0, "note": note}
            events.insert(0, JobEvent(jobid, "exception", now, context))
        for event in events:
            try:
                self._emit(event)
            except Exception:
                log.exception("the ensemble failed on event %s of Flux job %s", event.name, jobid)
        self._forget(jobid)
        if not self._closed:
            self._commands.submit(self._cancel_quietly, jobid)

    def _look_for_oom(self, clean: JobEvent) -> None:
        """A job killed by SIGKILL: read the oom plugin's report, then emit `clean` (preceded by
        an `exception` of type `oom` if the plugin reported an OOM kill)."""
        assert self._loop is not None
        jobid = clean.jobid
        self._sigkilled.discard(jobid)
        if self._closed:
            self._checked_for_oom(clean, None)
            return
        paths = self._outputs.get(jobid, [])
        future = self._loop.run_in_executor(self._commands, self._find_oom, jobid, paths)
        future.add_done_callback(
            lambda done: self._checked_for_oom(clean, None if done.cancelled() else done.result())
        )

    def _checked_for_oom(self, clean: JobEvent, report: str | None) -> None:
        jobid = clean.jobid
        if jobid not in self._ours:
            return  # ended meanwhile (the member failed it)
        if report is not None:
            context = {"type": "oom", "severity": 0, "note": report}
            if not self._emit_or_fail(JobEvent(jobid, "exception", clean.timestamp, context)):
                return
        if self._emit_or_fail(clean):
            self._forget(jobid)

    def _forget(self, jobid: int) -> None:
        """The job is over: keep nothing of it."""
        self._ours.discard(jobid)
        self._releasing.pop(jobid, None)
        self._seen.pop(jobid, None)
        self._outputs.pop(jobid, None)
        self._sigkilled.discard(jobid)
        if self._stream is not None:
            self._stream.forget(jobid)

    def _uri(self) -> str | None:
        return self.flux_uri or os.environ.get("FLUX_URI")


def output_paths(cwd: str | None, stdout: str | None, stderr: str | None) -> list[str]:
    """A job's output files, absolute: relative ones are taken from the job's directory."""
    base = cwd or os.getcwd()
    return list(dict.fromkeys(os.path.join(base, path) for path in (stdout, stderr) if path))


def _jobspec(answer: dict[str, Any]) -> dict[str, Any]:
    """The jobspec of a `job-manager.getattr` answer."""
    jobspec = answer.get("jobspec")
    return jobspec if isinstance(jobspec, dict) else {}


def _token(answer: dict[str, Any] | None) -> str | None:
    """The controller's token in a looked-up jobspec, if it has one."""
    if answer is None:
        return None
    try:
        return _jobspec(answer)["attributes"]["user"].get(TOKEN_ATTRIBUTE)
    except (KeyError, TypeError, AttributeError):
        return None  # not a jobspec this member wrote
