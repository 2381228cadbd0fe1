"""The local member's queue: first fit in submission order, at a cost that does not grow with it.

Waiting jobs are kept in buckets by shape (nodes, tasks, cores, gpus, memory, exclusive). Capacity
only shrinks while a scheduling pass starts jobs, so once the first job of a shape does not fit,
none of the jobs behind it of that shape can: a pass tries the head of each bucket once, in
submission order, and stops when no core is free. A submission whose shape already waits cannot
start either, so it costs an append. The cost of an event is therefore bounded by the number of
distinct shapes waiting, not by the number of jobs.

First fit alone lets a wide job starve behind a stream of narrow ones that keep taking the cores
it waits for. So, as backfill schedulers do, the oldest waiting job gets a reservation once it has
waited `reserve_after` seconds: the resources it needs are held for it, and jobs behind it start
only on what it will not need. It starts as soon as the jobs running on its resources end.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ensemble_core.spec import JobSpec

#: What decides where a job fits: jobs of equal shape fit in the same places.
Shape = tuple[int | None, int, int, int, int, bool]


class View(enum.Enum):
    """Whose eyes a node is seen with when a job is placed."""

    OTHERS = "a job without the reservation: held resources are taken"
    RESERVED = "the job holding the reservation: held resources are its own"
    IDLE = "the node as if nothing ran on it (can this ever fit, and where to reserve)"


@dataclass(slots=True, eq=False)
class Node:
    """One virtual node: capacity, what running jobs use, what the reservation holds."""

    cores: int
    memory_mb: int
    gpus: int
    used_cores: int = 0
    used_memory_mb: int = 0
    used_gpus: int = 0
    exclusive: bool = False
    held_cores: int = 0
    held_memory_mb: int = 0
    held_gpus: int = 0
    held_exclusive: bool = False

    @property
    def idle(self) -> bool:
        return self.used_cores == 0 and self.used_gpus == 0 and self.used_memory_mb == 0

    @property
    def held(self) -> bool:
        return self.held_exclusive or bool(self.held_cores or self.held_gpus or self.held_memory_mb)

    def room(self, view: View) -> tuple[int, int, int] | None:
        """Free (cores, gpus, memory) as `view` sees it, or None if the node is closed to it."""
        if view is View.IDLE:
            return self.cores, self.gpus, self.memory_mb
        if self.exclusive:
            return None
        cores = self.cores - self.used_cores
        gpus = self.gpus - self.used_gpus
        memory = self.memory_mb - self.used_memory_mb
        if view is View.RESERVED:
            return cores, gpus, memory
        if self.held_exclusive:
            return None
        return cores - self.held_cores, gpus - self.held_gpus, memory - self.held_memory_mb

    def whole(self, view: View) -> bool:
        """Could an exclusive job take this whole node, as `view` sees it?"""
        if view is View.IDLE:
            return True
        if view is View.RESERVED:
            return self.idle and not self.exclusive
        return self.idle and not self.exclusive and not self.held


@dataclass(slots=True, eq=False)
class Share:
    """The part of one node a job takes."""

    node: Node
    cores: int
    gpus: int
    memory_mb: int
    exclusive: bool

    def take(self, sign: int) -> None:
        node = self.node
        node.used_cores += sign * self.cores
        node.used_gpus += sign * self.gpus
        node.used_memory_mb += sign * self.memory_mb
        node.exclusive = self.exclusive and sign > 0

    def hold(self, sign: int) -> None:
        node = self.node
        node.held_cores += sign * self.cores
        node.held_gpus += sign * self.gpus
        node.held_memory_mb += sign * self.memory_mb
        node.held_exclusive = self.exclusive and sign > 0


def shape_of(spec: JobSpec) -> Shape:
    return (
        spec.nodes,
        spec.tasks,
        spec.cores_per_task,
        spec.gpus_per_task,
        spec.memory_mb or 0,
        spec.exclusive,
    )


def place(spec: JobSpec, nodes: list[Node], view: View) -> list[Share] | None:
    """Where the job's slots go on these nodes now, or None if they do not fit.

    With `nodes` set, the job takes that many nodes with an equal share each (the whole node if
    exclusive); without, its tasks are packed onto the first nodes that have room.
    """
    memory = spec.memory_mb or 0
    if spec.nodes is not None:
        slots = math.ceil(spec.tasks / spec.nodes)
        cores, gpus = slots * spec.cores_per_task, slots * spec.gpus_per_task
        share_memory = math.ceil(memory / spec.nodes)
        chosen: list[Share] = []
        for node in nodes:
            room = node.room(view)
            if room is None or room[0] < cores or room[1] < gpus or room[2] < share_memory:
                continue
            if spec.exclusive and not node.whole(view):
                continue
            chosen.append(Share(node, cores, gpus, share_memory, spec.exclusive))
            if len(chosen) == spec.nodes:
                return chosen
        return None
    shares: list[Share] = []
    left = spec.tasks
    per_core, per_gpu = spec.cores_per_task, spec.gpus_per_task
    per_memory = math.ceil(memory / spec.tasks)
    for node in nodes:
        room = node.room(view)
        if room is None:
            continue
        count = min(left, room[0] // per_core)
        if per_gpu:
            count = min(count, room[1] // per_gpu)
        if per_memory:
            count = min(count, room[2] // per_memory)
        if count > 0:
            shares.append(Share(node, count * per_core, count * per_gpu, count * per_memory, False))
            left -= count
            if not left:
                return shares
    return None


@dataclass(slots=True, eq=False)
class Ticket:
    """A waiting job, as the queue knows it."""

    key: Hashable
    spec: JobSpec
    shape: Shape
    seq: int
    queued_at: float
    queued: bool = True


@dataclass(slots=True)
class Capacity:
    """What one virtual node has."""

    cores: int
    memory_mb: int
    gpus: int

    def node(self) -> Node:
        return Node(self.cores, self.memory_mb, self.gpus)


@dataclass(eq=False)
class Scheduler:
    """Nodes, the jobs waiting for them, and the reservation of the oldest.

    The member calls `submit` for a job that may start, `release` when a job ends and then
    `schedule` to learn which waiting jobs start now. Every job that a pass or a submission
    starts has its shares taken already.
    """

    capacity: Capacity
    nodes_at_start: int
    max_nodes: int
    #: Seconds the oldest waiting job waits before resources are held for it; None: never.
    reserve_after: float | None
    clock: Callable[[], float] = time.monotonic
    nodes: list[Node] = field(init=False)
    #: Room may have grown without a pass (a reservation was dropped): call `schedule`.
    unsettled: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.nodes = [self.capacity.node() for _ in range(self.nodes_at_start)]
        self._largest = [self.capacity.node() for _ in range(self.max_nodes)]
        self._free_cores = self.capacity.cores * self.nodes_at_start
        self._seq = itertools.count()
        self._tickets: dict[Hashable, Ticket] = {}
        self._buckets: dict[Shape, deque[Ticket]] = {}
        self._heads: list[tuple[int, Shape]] = []  # (seq of a bucket's head, shape); may be stale
        self._order: deque[Ticket] = deque()  # every waiting ticket by age; cancelled ones lazily
        self._reserved: Ticket | None = None
        self._holds: list[Share] = []

    @property
    def waiting(self) -> int:
        return len(self._tickets)

    @property
    def reserved(self) -> Hashable | None:
        """The key of the job resources are held for, if any."""
        return None if self._reserved is None else self._reserved.key

    def fits_ever(self, spec: JobSpec) -> bool:
        """Could the member at its largest and idle hold this job?"""
        return place(spec, self._largest, View.IDLE) is not None

    # Jobs -------------------------------------------------------------------------------------

    def submit(self, key: Hashable, spec: JobSpec) -> list[Share] | None:
        """Start the job now (its shares, taken) or queue it (None)."""
        shape = shape_of(spec)
        bucket = self._buckets.get(shape)
        if bucket is None:
            # Nothing of this shape waits, and nothing freed since the last pass: this job is
            # the only one that might fit now.
            self._settle()
            if self._free_cores > 0:
                shares = place(spec, self.nodes, View.OTHERS)
                if shares is not None:
                    self._take(shares, +1)
                    return shares
            bucket = self._buckets[shape] = deque()
        ticket = Ticket(key, spec, shape, next(self._seq), self.clock())
        if not bucket:
            heapq.heappush(self._heads, (ticket.seq, shape))
        bucket.append(ticket)
        self._order.append(ticket)
        self._tickets[key] = ticket
        self._compact_if_bloated()
        return None

    def cancel(self, key: Hashable) -> bool:
        """Take a waiting job out of the queue; False if it was not waiting."""
        ticket = self._tickets.pop(key, None)
        if ticket is None:
            return False
        ticket.queued = False
        bucket = self._buckets[ticket.shape]
        if bucket[0] is ticket:
            self._advance(ticket.shape, bucket)
        if ticket is self._reserved:
            self._drop_reservation()
        return True

    def release(self, shares: list[Share]) -> None:
        """A job ended: give its shares back (then `schedule`)."""
        self._take(shares, -1)

    def schedule(self) -> list[tuple[Hashable, list[Share]]]:
        """The waiting jobs that start now, in submission order, with their shares taken."""
        started: list[tuple[Hashable, list[Share]]] = []
        while True:
            self._settle()
            if not self._pass(started):
                break
        self.unsettled = False
        return started

    # Capacity ---------------------------------------------------------------------------------

    def grow(self, count: int) -> int:
        """Add up to `count` nodes within max_nodes; how many were added (then `schedule`)."""
        added = max(0, min(count, self.max_nodes - len(self.nodes)))
        self.nodes.extend(self.capacity.node() for _ in range(added))
        self._free_cores += added * self.capacity.cores
        return added

    def shrink(self, count: int) -> int:
        """Remove up to `count` idle nodes, never the last; how many were removed."""
        removed = 0
        for node in reversed(list(self.nodes)):
            if removed == count or len(self.nodes) == 1:
                break
            if node.idle:
                self.nodes.remove(node)
                self._free_cores -= node.cores
                removed += 1
        if removed and self._reserved is not None:
            self._drop_reservation()  # it may have held a removed node: it is made anew
        return removed

    # Inside -----------------------------------------------------------------------------------

    def _pass(self, started: list[tuple[Hashable, list[Share]]]) -> bool:
        """One first-fit pass over the buckets' heads; True if it must run again (the reserved
        job started, so what it held is open to the others)."""
        heads, tried = self._heads, []
        again = False
        while heads and self._free_cores > 0:
            seq, shape = heapq.heappop(heads)
            bucket = self._buckets.get(shape)
            if bucket is None or bucket[0].seq != seq:
                continue  # stale: that head left
            ticket = bucket[0]
            reserved = ticket is self._reserved
            shares = place(ticket.spec, self.nodes, View.RESERVED if reserved else View.OTHERS)
            if shares is None:
                tried.append((seq, shape))
                continue
            del self._tickets[ticket.key]
            ticket.queued = False
            self._advance(shape, bucket)
            self._take(shares, +1)
            started.append((ticket.key, shares))
            if reserved:
                self._drop_reservation()
                again = True
                break
        for entry in tried:
            heapq.heappush(heads, entry)
        self._compact_if_bloated()
        return again

    def _compact_if_bloated(self) -> None:
        """Tickets that left are dropped lazily from the age order and the buckets, and stale
        heads from the heap; once they outnumber the live ones, drop them all. Each rebuild
        costs what the dead entries it drops cost to add: O(1) per ticket, amortized."""
        if len(self._order) > 2 * len(self._tickets) + 64:
            self._order = deque(ticket for ticket in self._order if ticket.queued)
            for shape, bucket in self._buckets.items():
                self._buckets[shape] = deque(ticket for ticket in bucket if ticket.queued)
        if len(self._heads) > 2 * len(self._buckets) + 64:
            self._heads = [(bucket[0].seq, shape) for shape, bucket in self._buckets.items()]
            heapq.heapify(self._heads)

    def _advance(self, shape: Shape, bucket: deque[Ticket]) -> None:
        """The head of the bucket left: drop cancelled ones behind it, index the new head."""
        bucket.popleft()
        while bucket and not bucket[0].queued:
            bucket.popleft()
        if bucket:
            heapq.heappush(self._heads, (bucket[0].seq, shape))
        else:
            del self._buckets[shape]

    def _oldest(self) -> Ticket | None:
        order = self._order
        while order and not order[0].queued:
            order.popleft()
        return order[0] if order else None

    def _settle(self) -> None:
        """Hold resources for the oldest waiting job once it has waited `reserve_after`."""
        if self._reserved is not None or self.reserve_after is None:
            return
        oldest = self._oldest()
        if oldest is None or self.clock() - oldest.queued_at < self.reserve_after:
            return
        # The least used nodes are likely to drain first.
        nodes = sorted(self.nodes, key=lambda node: node.used_cores)
        holds = place(oldest.spec, nodes, View.IDLE)
        if holds is None:
            return  # it needs more nodes than there are now: it waits for grow, holding nothing
        for share in holds:
            share.hold(+1)
        self._reserved, self._holds = oldest, holds

    def _drop_reservation(self) -> None:
        for share in self._holds:
            share.hold(-1)
        self._reserved, self._holds = None, []
        self.unsettled = True

    def _take(self, shares: list[Share], sign: int) -> None:
        for share in shares:
            share.take(sign)
            self._free_cores -= sign * share.cores
