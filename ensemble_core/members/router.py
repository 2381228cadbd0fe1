"""Several members behind one: the router chooses a member per job and is a member itself.

The controller sees one member. Each job goes to one of several named members, in this order:

1. a member a rule sent it to (`member:` of a submit or resubmit action);
2. the member a `route` action chose for its group, if that member can run it;
3. the member the job asks for (a group's `member:`, a front door's resource);
4. the `default` member, if one is declared and it can run the job;
5. among the members that can run it (`matching.compatible`), the one the policy picks.

A job no member can ever run ends at once as `unsatisfiable` (Flux's `alloc` exception), its
note saying what each member lacks. Member job ids become text, `<member>/<the member's id as
JSON>` (`hpc/1234`, `cloud/"ens-7"`), which the state journal keeps like any id; jobs the router
ends itself have ids `/<n>`. Each member's events are passed on under those ids.

A controller may take a member's events straight from the member (`take_events_by`): it is
given, per member, the relay below, for the events of jobs it does not follow (yet); an event of
a job it follows goes to that job without a rewritten id. Such a controller tells the router the
start (`started`) and the end (`ended`) of the jobs it follows, from its own start and end:
what the router keeps of its jobs is then noted without a look at every event's name, and the
router still knows a job while the controller ends it (`open_jobs`, `split_id` and `log_paths`
answer without reading its id). The relay notes the start and end of the jobs it passes on, so
a job the controller never follows is forgotten too.

A member whose event stream is lost for good does not end the ensemble: its active jobs end as
`failed` (the reason names the member) and no job goes to it any more. Only when every member
is lost is the router lost. Each member stays as it is and knows nothing of the others.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent
from ensemble_core.matching import (
    MEMBER_ATTRIBUTE,
    POLICIES,
    RULE_MEMBER_ATTRIBUTE,
    Offer,
    choose,
    compatible,
    lacks,
    offer_of,
    unsatisfiable_note,
)
from ensemble_core.members.base import EmitEvent, Member
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

#: How a controller takes one member's events: (member name, relay) -> emit.
Intake = Callable[[str, EmitEvent], EmitEvent]

#: Pending times per member that `least-pending` averages.
RECENT_PENDING = 20
#: The events of a job the router keeps track of (pending times, which jobs are open).
FOLLOWED = frozenset({"start", "clean"})
_EARLY_START, _EARLY_END = 1, 2


class _Part:
    """One named member and what the router knows of its jobs."""

    __slots__ = (
        "adopting",
        "declared",
        "early",
        "emit",
        "ended",
        "features",
        "lost",
        "member",
        "metric_group",
        "name",
        "offer",
        "pending_times",
        "prefix",
        "started",
        "submitting",
        "waiting",
        "where",
    )

    def __init__(
        self,
        name: str,
        member: Member,
        features: Iterable[str],
        declared: Mapping[str, Any],
        where: dict[str, tuple[str, Any]],
        started: Callable[[str], None],
        ended: Callable[[str], tuple[str, Any] | None],
    ) -> None:
        self.name = name
        self.member = member
        self.prefix = f"{name}/"
        self.metric_group = f"@{name}"
        self.features = frozenset(features)
        self.declared = dict(declared)
        self.offer = Offer(features=self.features)
        self.emit: EmitEvent = lambda event: None
        #: The jobs not yet clean, of every member of the router (shared): router id ->
        #: (member name, its own id), so that an open job is found without reading its id.
        self.where = where
        #: The router's notes of a job's start and end, by router id: the relay's, and the
        #: controller's (see the module's docstring).
        self.started = started
        self.ended = ended
        #: Of this member's, the ones not started: its id -> when submitted (monotonic), oldest
        #: first.
        self.waiting: dict[Any, float] = {}
        #: Events of jobs whose submission has not returned yet (the local member starts and
        #: ends jobs inside `submit`): id -> _EARLY_START | _EARLY_END.
        self.early: dict[Any, int] = {}
        self.submitting = 0
        #: The router's `adopt` is in flight: the controller may hold events until it returns.
        self.adopting = False
        self.pending_times: deque[float] = deque(maxlen=RECENT_PENDING)
        self.lost: str | None = None

    def outer(self, jobid: Any) -> str:
        """The router's id of this member's job."""
        return self.prefix + (str(jobid) if type(jobid) is int else json.dumps(jobid))

    def relay(self, event: JobEvent) -> None:
        """An event of this member, passed on under the router's id (the hot path).

        The event of a job the router follows is passed on as it is, its id swapped for the
        router's while the controller handles it and given back after: no event is made per
        event, and the member keeps its event as it made it. An event of a job whose
        submission has not returned (or that ended) is passed on as a new event instead: the
        controller may hold those until it learns the id."""
        jobid = event.jobid
        name = event.name
        outer = self.outer(jobid)
        if outer not in self.where:  # nor any once the member is lost: they were forgotten
            if self.lost is not None:
                return
            if self.submitting and name in FOLLOWED:
                self.early[jobid] = _EARLY_START if name == "start" else _EARLY_END
            self.emit(JobEvent(outer, name, event.timestamp, event.context))
            return
        if name == "start":
            self.started(outer)
        elif name == "clean":
            self.ended(outer)
        if self.adopting:  # held by the controller until the router's adopt returns: a copy
            self.emit(JobEvent(outer, name, event.timestamp, event.context))
            return
        event.jobid = outer
        try:
            self.emit(event)
        finally:
            event.jobid = jobid

    def submitted(self, jobid: Any, since: float) -> str:
        """The member returned the id of a job it took: follow it unless it has ended; the
        router's id of the job."""
        outer = self.outer(jobid)
        early = self.early.pop(jobid, 0)
        if early != _EARLY_END:
            self.where[outer] = (self.name, jobid)
            if early == _EARLY_START:
                self.pending_times.append(time.monotonic() - since)
            else:
                self.waiting[jobid] = since
        if not self.submitting:
            self.early.clear()
        return outer

    def pending_time(self, now: float) -> float:
        """The recent pending time: the mean of the last pending times, or the wait of the
        oldest job still waiting if that is longer (a member whose jobs never start)."""
        times = self.pending_times
        mean = sum(times) / len(times) if times else 0.0
        oldest = next(iter(self.waiting.values()), None)
        return max(mean, 0.0 if oldest is None else now - oldest)


class RouterMember(Member):
    """Several named members as one; see the module's docstring."""

    def __init__(
        self,
        members: Mapping[str, Member],
        *,
        default: str | None = None,
        policy: str = "first",
        features: Mapping[str, Iterable[str]] | None = None,
        offers: Mapping[str, Mapping[str, int | None]] | None = None,
    ) -> None:
        if not members:
            raise MemberError("several members: declare at least one under members:")
        if policy not in POLICIES:
            raise MemberError(f"routing policy {policy!r}: choose one of {', '.join(POLICIES)}")
        if default is not None and default not in members:
            raise MemberError(_unknown(default, members))
        #: Each open job's member and its own id, by router id (see `_Part.where`): what
        #: `split_id` answers without reading the id, for a controller to look up itself.
        self.open_jobs: dict[str, tuple[str, Any]] = {}
        self._parts = {
            name: _Part(
                name,
                member,
                (features or {}).get(name, ()),
                (offers or {}).get(name, {}),
                self.open_jobs,
                self.started,
                self.ended,
            )
            for name, member in members.items()
        }
        self.name = "+".join(members)
        self.policy = policy
        #: Where grow and shrink without a member go; jobs prefer it when it was declared.
        self.default = default or next(iter(members))
        self._prefer_default = default is not None
        #: group -> member chosen by a `route` action.
        self.routes: dict[str, str] = {}
        self._own_ids = itertools.count(1)
        self._emit: EmitEvent = lambda event: None
        self._intake: Intake | None = None

    @property
    def members(self) -> dict[str, Member]:
        return {name: part.member for name, part in self._parts.items()}

    @property
    def jobs_end_with_controller(self) -> bool:  # type: ignore[override]
        return any(part.member.jobs_end_with_controller for part in self._parts.values())

    def ends_with_controller(self, member_id: Any) -> bool:
        part, inner = self._split(member_id)
        return part is not None and part.member.ends_with_controller(inner)

    def take_events_by(self, intake: Intake) -> None:
        """Before `start`: each member's events go to `intake(name, relay, note, FOLLOWED)`,
        the way the controller takes that member's events (see the module's docstring)."""
        self._intake = intake

    def started(self, member_id: Any) -> None:
        """An open job started (told by the controller, or seen by the relay): its pending
        time joins the recent ones that `least-pending` uses, once (a start told twice finds
        it no longer waiting). One call on the path of every job's start."""
        found = self.open_jobs.get(member_id)
        if found is not None:
            part = self._parts[found[0]]
            submitted = part.waiting.pop(found[1], None)
            if submitted is not None:
                part.pending_times.append(time.monotonic() - submitted)

    def ended(self, member_id: Any) -> tuple[str, Any] | None:
        """A job has ended, or is given up (told by the controller, seen by the relay, or its
        member lost): the router forgets it; (member name, the member's own id) if it was
        open."""
        found = self.open_jobs.pop(member_id, None)
        if found is not None:
            self._parts[found[0]].waiting.pop(found[1], None)
        return found

    def split_id(self, member_id: Any) -> tuple[str, Any] | None:
        """(member name, the member's own id) of a router id; None for the router's own."""
        part, inner = self._split(member_id)
        return None if part is None else (part.name, inner)

    def member_group(self, member_id: Any) -> str | None:
        """The metrics pseudo-group (`@name`) of the member that runs this job, if any."""
        if type(member_id) is not str:
            return None
        part = self._parts.get(member_id.partition("/")[0])
        return None if part is None else part.metric_group

    def named(self, name: str) -> Member:
        """The member called `name`; a MemberError (with a "did you mean") if there is none."""
        part = self._parts.get(name)
        if part is None:
            raise MemberError(_unknown(name, self._parts))
        return part.member

    # Member protocol --------------------------------------------------------------------------

    async def start(self, emit: EmitEvent) -> None:
        """Start every member (at once); if one cannot start, say which. As for one member, the
        caller then closes the router, which closes them all."""
        self._emit = emit
        parts = list(self._parts.values())
        results = await asyncio.gather(
            *(self._start_part(part) for part in parts), return_exceptions=True
        )
        for part, error in zip(parts, results, strict=True):
            if isinstance(error, Exception):
                raise MemberError(
                    f"the {part.name} member ({part.member.name}): {error}"
                ) from error
            if error is not None:  # a cancellation, an interrupt: not the member's to word
                raise error

    async def _start_part(self, part: _Part) -> None:
        part.emit = self._emit
        part.member.on_lost = lambda reason: self._part_lost(part, reason)
        intake = self._intake
        await part.member.start(part.relay if intake is None else intake(part.name, part.relay))
        part.offer = offer_of(part.member.offers(), part.declared, part.features)

    async def submit(self, spec: JobSpec) -> str:
        part, kind, note = self._place(spec)
        if part is None:
            return self._refuse(kind, note)
        since = time.monotonic()
        part.submitting += 1
        try:
            jobid = await part.member.submit(spec)
        except Exception as error:
            part.submitting -= 1
            if not part.submitting:
                part.early.clear()
            said = " ".join(str(error).split()) or type(error).__name__
            return self._refuse("exec", f"submission to the {part.name} member failed: {said}")
        part.submitting -= 1
        outer = part.submitted(jobid, since)
        if part.lost is not None and self.ended(outer):  # lost while it was submitted
            self._end(outer, "exec", _lost_note(part))
        return outer

    async def cancel(self, jobid: Any) -> None:
        part, inner = self._split(jobid)
        if part is not None and part.lost is None:
            await part.member.cancel(inner)

    async def grow(self, value: int) -> str:
        return await self.resize(self.default, value, grow=True)

    async def shrink(self, value: int) -> str:
        return await self.resize(self.default, value, grow=False)

    async def resize(self, name: str, value: int, *, grow: bool) -> str:
        """Grow or shrink the member called `name`; what it did, naming it."""
        member = self.named(name)
        done = await (member.grow(value) if grow else member.shrink(value))
        return f"{name}: {done}"

    def route(self, group: str, name: str | None) -> str:
        """Send the group's next jobs to the member `name` (None: where they would go without a
        route); what changed, for the action's record."""
        if name is not None:
            self.named(name)
        before = self.routes.get(group)
        if name is None:
            self.routes.pop(group, None)
        else:
            self.routes[group] = name
        now = name or "no route (as declared, or matched)"
        return f"{group}: {now}" + (f" (was {before})" if before and before != name else "")

    async def adopt(self, jobs: list[tuple[Any, str]]) -> dict[str, Any]:
        """Each member looks for its own jobs; jobs whose id was never learned, by token, in
        every member."""
        asked: dict[str, list[tuple[Any, str]]] = {name: [] for name in self._parts}
        anywhere = []
        for member_id, token in jobs:
            if member_id is None:
                anywhere.append((None, token))
                continue
            part, inner = self._split(member_id)
            if part is not None:
                asked[part.name].append((inner, token))
        found: dict[str, Any] = {}
        now = time.monotonic()
        for part in self._parts.values():
            part.adopting = True
        try:
            for name, part in self._parts.items():
                mine = asked[name] + anywhere
                if not mine or part.lost is not None:
                    continue
                for token, inner in (await part.member.adopt(mine)).items():
                    if token not in found:
                        found[token] = outer = part.outer(inner)
                        self.open_jobs[outer] = (name, inner)
                        part.waiting[inner] = now
        finally:
            for part in self._parts.values():
                part.adopting = False
        return found

    def describe(self) -> dict[str, Any]:
        members = {}
        for name, part in self._parts.items():
            described = {**part.member.describe(), "offers": part.offer.shown()}
            if part.lost is not None:
                described["lost"] = part.lost
            members[name] = described
        described = {"member": self.name, "default": self.default, "policy": self.policy}
        if self.routes:
            described["routes"] = dict(self.routes)
        return {**described, "members": members}

    def log_paths(self, jobid: Any) -> list[str]:
        found = self.open_jobs.get(jobid)  # an open job (the controller asks before `ended`)
        if found is not None:
            return self._parts[found[0]].member.log_paths(found[1])
        part, inner = self._split(jobid)
        return [] if part is None else part.member.log_paths(inner)

    async def close(self) -> None:
        """Close every member (at once); one that fails to close does not stop the others."""
        parts = list(self._parts.values())
        results = await asyncio.gather(
            *(part.member.close() for part in parts), return_exceptions=True
        )
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing the %s member: %s", part.name, result)

    # Choosing a member ------------------------------------------------------------------------

    def _place(self, spec: JobSpec) -> tuple[_Part | None, str, str]:
        """The member for this job, or None with the exception type and note that end it."""
        attributes = spec.attributes
        sent = attributes.get(RULE_MEMBER_ATTRIBUTE)
        if sent:
            return self._pinned(str(sent), spec, "a rule sent it to")
        routed = self.routes.get(spec.group)
        if routed is not None:
            part = self._parts[routed]
            if part.lost is None and not lacks(spec, part.offer):
                return part, "", ""
        asked = attributes.get(MEMBER_ATTRIBUTE)
        if asked:
            return self._pinned(str(asked), spec, "it asks for")
        if self._prefer_default:
            part = self._parts[self.default]
            if part.lost is None and not lacks(spec, part.offer):
                return part, "", ""
        able, lacking = compatible(spec, {n: p.offer for n, p in self._parts.items()})
        live = [name for name in able if self._parts[name].lost is None]
        if live:
            return self._parts[self._choose(live)], "", ""
        if able:
            lost = ", ".join(f"{name} ({self._parts[name].lost})" for name in able)
            return None, "exec", f"the only members that could run it were lost: {lost}"
        return None, "alloc", unsatisfiable_note(lacking)

    def _pinned(self, name: str, spec: JobSpec, why: str) -> tuple[_Part | None, str, str]:
        part = self._parts.get(name)
        if part is None:
            return None, "alloc", f"unsatisfiable request: {why} {_unknown(name, self._parts)}"
        if part.lost is not None:
            return None, "exec", f"{why} the {name} member, which was lost ({part.lost})"
        missing = lacks(spec, part.offer)
        if missing:
            lacking = "; ".join(missing)
            return (
                None,
                "alloc",
                f"unsatisfiable request: {why} the {name} member, which lacks {lacking}",
            )
        return part, "", ""

    def _choose(self, candidates: list[str]) -> str:
        if self.policy == "first" or len(candidates) == 1:
            return candidates[0]
        parts = self._parts
        backlog = {name: len(parts[name].waiting) for name in candidates}
        now = time.monotonic()
        pending = {name: parts[name].pending_time(now) for name in candidates}
        return choose(candidates, self.policy, backlog, pending)

    # Jobs the router ends itself --------------------------------------------------------------

    def _refuse(self, kind: str, note: str) -> str:
        """A job no member takes: it gets its whole life at once, as the local member gives an
        unsatisfiable job (`submit`, `validate`, a fatal `exception`, `clean`)."""
        jobid = f"/{next(self._own_ids)}"
        now = time.time()
        self._emit(JobEvent(jobid, "submit", now, {"urgency": 16, "flags": 0, "version": 1}))
        self._emit(JobEvent(jobid, "validate", now, {}))
        self._end(jobid, kind, note)
        return jobid

    def _end(self, jobid: str, kind: str, note: str) -> None:
        now = time.time()
        self._emit(JobEvent(jobid, "exception", now, {"type": kind, "severity": 0, "note": note}))
        self._emit(JobEvent(jobid, "clean", now, {}))

    def _part_lost(self, part: _Part, reason: str) -> None:
        """One member's stream is gone for good: its jobs end, no job goes to it any more; the
        router is lost only when every member is."""
        if part.lost is not None:
            return
        part.lost = reason or "its event stream ended"
        log.error("the %s member was lost: %s", part.name, part.lost)
        note = _lost_note(part)
        ending = [outer for outer, (name, _) in list(self.open_jobs.items()) if name == part.name]
        for outer in ending:
            self.ended(outer)
        for outer in ending:
            self._end(outer, "exec", note)
        if all(p.lost is not None for p in self._parts.values()):
            lost = "; ".join(f"{p.name}: {p.lost}" for p in self._parts.values())
            self.on_lost(f"every member was lost ({lost})")

    def _split(self, jobid: Any) -> tuple[_Part | None, Any]:
        """The member and its own id of a router id (None for the router's own jobs)."""
        if type(jobid) is not str:
            return None, None
        found = self.open_jobs.get(jobid)  # an open job: no id to read
        if found is not None:
            return self._parts[found[0]], found[1]
        name, _, inner = jobid.partition("/")
        part = self._parts.get(name)
        if part is None:
            return None, None
        if inner.isdigit():  # a queue's number, as `outer` writes it: no JSON to read
            return part, int(inner)
        try:
            return part, json.loads(inner)
        except ValueError:
            return None, None


def _lost_note(part: _Part) -> str:
    return (
        f"the {part.name} member was lost ({part.lost}); what became of the job on the queue "
        "is unknown"
    )


def _unknown(name: str, names: Iterable[str]) -> str:
    known = list(names)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"no member '{name}' (members: {', '.join(known)}){hint}"
