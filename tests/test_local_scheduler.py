"""The local member's queue: first fit kept, nothing over-allocated, no starvation, flat cost."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_core.members import local_scheduler
from ensemble_core.members.local_scheduler import Capacity, Node, Scheduler, Share, View, place
from ensemble_core.spec import JobSpec


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Reference:
    """The promise, written the slow and obvious way: at every event, settle the reservation,
    then walk every waiting job in submission order and start each one that fits; when the job
    holding the reservation starts, walk again."""

    def __init__(self, capacity: Capacity, nodes: int, max_nodes: int, reserve_after, clock):
        self.capacity, self.max_nodes, self.reserve_after, self.clock = (
            capacity, max_nodes, reserve_after, clock,
        )  # fmt: skip
        self.nodes = [capacity.node() for _ in range(nodes)]
        self.waiting: list[tuple[int, JobSpec, float]] = []
        self.reserved: int | None = None
        self.holds: list[Share] = []

    def submit(self, key: int, spec: JobSpec) -> list[tuple[int, list[Share]]]:
        self.waiting.append((key, spec, self.clock()))
        return self.schedule()

    def cancel(self, key: int) -> list[tuple[int, list[Share]]]:
        self.waiting = [item for item in self.waiting if item[0] != key]
        if key == self.reserved:
            self.drop()
        return self.schedule()

    def release(self, shares: list[Share]) -> list[tuple[int, list[Share]]]:
        for share in shares:
            share.take(-1)
        return self.schedule()

    def grow(self, count: int) -> list[tuple[int, list[Share]]]:
        while count and len(self.nodes) < self.max_nodes:
            self.nodes.append(self.capacity.node())
            count -= 1
        return self.schedule()

    def shrink(self, count: int) -> list[tuple[int, list[Share]]]:
        idle = [n for n in reversed(self.nodes) if n.idle][: min(count, len(self.nodes) - 1)]
        for node in idle:
            self.nodes.remove(node)
        if idle and self.reserved is not None:
            self.drop()
        return self.schedule()

    def drop(self) -> None:
        for share in self.holds:
            share.hold(-1)
        self.reserved, self.holds = None, []

    def schedule(self) -> list[tuple[int, list[Share]]]:
        started = []
        walk_again = True
        while walk_again:
            walk_again = False
            if self.reserved is None and self.reserve_after is not None and self.waiting:
                key, spec, since = self.waiting[0]
                if self.clock() - since >= self.reserve_after:
                    by_use = sorted(self.nodes, key=lambda node: node.used_cores)
                    holds = place(spec, by_use, View.IDLE)
                    if holds is not None:
                        for share in holds:
                            share.hold(+1)
                        self.reserved, self.holds = key, holds
            for item in list(self.waiting):
                key, spec, _ = item
                view = View.RESERVED if key == self.reserved else View.OTHERS
                shares = place(spec, self.nodes, view)
                if shares is None:
                    continue
                for share in shares:
                    share.take(+1)
                self.waiting.remove(item)
                started.append((key, shares))
                if key == self.reserved:
                    self.drop()
                    walk_again = True
                    break
        return started


SPECS = st.builds(
    lambda nodes, tasks, cores, gpus, memory, exclusive: JobSpec(
        command=["true"], nodes=nodes, tasks=max(tasks, nodes or 1), cores_per_task=cores,
        gpus_per_task=gpus, memory_mb=memory, exclusive=exclusive and nodes is not None,
    ),
    st.sampled_from([None, None, 1, 2]), st.integers(1, 3), st.integers(1, 2),
    st.sampled_from([0, 0, 1]), st.sampled_from([None, None, 200, 700]), st.booleans(),
)  # fmt: skip
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), SPECS),
        st.tuples(st.just("end"), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("grow"), st.integers(1, 2)),
        st.tuples(st.just("shrink"), st.integers(1, 2)),
        st.tuples(st.just("wait"), st.sampled_from([0.5, 3.0])),
    ),
    max_size=60,
)
CAPACITIES = st.builds(
    Capacity, st.integers(2, 4), st.sampled_from([1000, 2000]), st.integers(0, 2)
)


def layout(nodes: list[Node], shares: list[Share]) -> list[tuple[int, int, int, int]]:
    return [(nodes.index(s.node), s.cores, s.gpus, s.memory_mb) for s in shares]


def assert_within_capacity(nodes: list[Node], running: dict[int, list[Share]]) -> None:
    for node in nodes:
        assert 0 <= node.used_cores <= node.cores
        assert 0 <= node.used_gpus <= node.gpus
        assert 0 <= node.used_memory_mb <= node.memory_mb
        on_node = [shares for shares in running.values() if any(s.node is node for s in shares)]
        if node.exclusive:
            assert len(on_node) == 1


@settings(max_examples=300, deadline=None)
@given(
    CAPACITIES, st.integers(1, 2), st.integers(0, 1), st.sampled_from([None, 0.0, 2.0]),
    OPERATIONS,
)  # fmt: skip
def test_the_queue_starts_exactly_what_the_slow_reference_starts(
    capacity, nodes, extra_nodes, reserve_after, operations
):
    clock = Clock()
    queue = Scheduler(capacity, nodes, nodes + extra_nodes, reserve_after, clock)
    reference = Reference(capacity, nodes, nodes + extra_nodes, reserve_after, clock)
    running: dict[int, list[Share]] = {}  # the queue's
    running_ref: dict[int, list[Share]] = {}
    waiting: list[int] = []
    key = 0

    def check(started, expected) -> None:
        assert [(k, layout(queue.nodes, s)) for k, s in started] == [
            (k, layout(reference.nodes, s)) for k, s in expected
        ]
        for k, shares in started:
            waiting.remove(k)
            running[k] = shares
        running_ref.update(expected)
        assert_within_capacity(queue.nodes, running)
        assert queue.waiting == len(waiting) == len(reference.waiting)

    for name, argument in operations:
        if name == "submit":
            if not queue.fits_ever(argument):
                continue
            key += 1
            waiting.append(key)
            shares = queue.submit(key, argument)
            check([(key, shares)] if shares else [], reference.submit(key, argument))
        elif name == "end" and running:
            ended = sorted(running)[argument % len(running)]
            queue.release(running.pop(ended))
            check(queue.schedule(), reference.release(running_ref.pop(ended)))
        elif name == "cancel" and waiting:
            cancelled = waiting[argument % len(waiting)]
            assert queue.cancel(cancelled)
            waiting.remove(cancelled)
            check(queue.schedule() if queue.unsettled else [], reference.cancel(cancelled))
        elif name == "grow":
            queue.grow(argument)
            check(queue.schedule(), reference.grow(argument))
        elif name == "shrink":
            queue.shrink(argument)
            check(queue.schedule() if queue.unsettled else [], reference.shrink(argument))
        elif name == "wait":
            clock.now += argument

    # Every job that fits eventually runs: end what runs, at full size, until nothing waits.
    queue.grow(queue.max_nodes)
    check(queue.schedule(), reference.grow(reference.max_nodes))
    for _ in range(len(waiting) + 1):
        for ended in list(running):
            queue.release(running.pop(ended))
            check(queue.schedule(), reference.release(running_ref.pop(ended)))
    assert waiting == [] and queue.waiting == 0
    assert all(node.idle and not node.held for node in queue.nodes)


def narrow_stream(reserve_after: float | None, steps: int) -> tuple[int | None, int]:
    """Four narrow jobs run on four cores; a wide job needing all four arrives; then, once a
    second, the oldest narrow job ends and a new one arrives. The step at which the wide job
    started (None: never), and how many narrow jobs that arrived after it started before it."""
    clock = Clock()
    queue = Scheduler(Capacity(4, 1000, 0), 1, 1, reserve_after, clock)
    narrow, wide = JobSpec(command=["true"]), JobSpec(command=["true"], tasks=4)
    running: list[tuple[int, list[Share]]] = [(k, queue.submit(k, narrow)) for k in range(4)]
    assert queue.submit("wide", wide) is None
    overtaken = 0
    for step in range(1, steps + 1):
        clock.now = float(step)
        queue.release(running.pop(0)[1])
        started = queue.schedule()
        shares = queue.submit(100 + step, narrow)
        if shares is not None:
            started.append((100 + step, shares))
        for key, shares in started:
            if key == "wide":
                return step, overtaken
            overtaken += key != "wide" and key >= 100
            running.append((key, shares))
    return None, overtaken


def test_without_a_reservation_a_wide_job_starves_behind_narrow_ones():
    assert narrow_stream(reserve_after=None, steps=200) == (None, 200)


@pytest.mark.parametrize("reserve_after", [0.0, 10.0, 30.0])
def test_the_oldest_job_starts_once_the_jobs_on_its_reservation_end(reserve_after):
    step, overtaken = narrow_stream(reserve_after, steps=200)
    # Narrow jobs overtake it until it has waited reserve_after; then nothing new starts on
    # what it needs, and it starts when the four narrow jobs running then have ended.
    assert step is not None and step <= reserve_after + 4
    assert overtaken <= reserve_after


def test_a_reservation_leaves_other_nodes_to_the_others():
    queue = Scheduler(Capacity(4, 1000, 0), 2, 2, 0.0, Clock())
    three = JobSpec(command=["true"], tasks=3, nodes=1)
    first, second = queue.submit("a", three), queue.submit("b", three)
    assert first and second and first[0].node is not second[0].node
    assert queue.submit("wide", JobSpec(command=["true"], tasks=4, nodes=1)) is None
    # The wide job holds the first node: a narrow job still starts on the second's free core.
    narrow = JobSpec(command=["true"])
    later = queue.submit("narrow", narrow)
    assert queue.reserved == "wide" and later is not None and later[0].node is second[0].node
    assert queue.submit("narrow again", narrow) is None
    queue.release(first)
    assert [(key, shares[0].node) for key, shares in queue.schedule()] == [("wide", first[0].node)]


def test_a_job_that_needs_a_grow_holds_nothing():
    queue = Scheduler(Capacity(2, 1000, 0), 1, 2, 0.0, Clock())
    assert queue.submit("busy", JobSpec(command=["true"])) is not None
    assert queue.submit("two-nodes", JobSpec(command=["true"], nodes=2, tasks=2)) is None
    assert queue.submit("narrow", JobSpec(command=["true"])) is not None
    assert queue.reserved is None


@pytest.mark.parametrize(
    "capacity, nodes, spec",
    [
        (Capacity(4, 10**6, 0), 1, JobSpec(command=["true"])),
        (Capacity(64, 10**6, 4), 1, JobSpec(command=["true"], gpus_per_task=1)),
        (Capacity(64, 4 * 64, 0), 1, JobSpec(command=["true"], memory_mb=64)),
        (Capacity(2, 10**6, 0), 4, JobSpec(command=["true"], nodes=1, exclusive=True)),
    ],
    ids=["cores", "gpus", "memory", "whole-nodes"],
)
def test_an_event_tries_as_many_placements_with_10000_waiting_as_with_100(
    monkeypatch, capacity, nodes, spec
):
    """The cost promise, counted rather than timed: placements tried per submit and per end."""
    calls = {"place": 0}
    real_place = local_scheduler.place

    def counting_place(*args):
        calls["place"] += 1
        return real_place(*args)

    monkeypatch.setattr(local_scheduler, "place", counting_place)

    def placements_per_event(waiting: int) -> tuple[int, int]:
        queue = Scheduler(capacity, nodes, nodes, 60.0, Clock())
        running = [queue.submit(k, spec) for k in range(4)]
        assert all(running)
        for key in range(4, 4 + waiting):
            assert queue.submit(key, spec) is None
        calls["place"] = 0
        queue.submit("one more", spec)
        per_submit = calls["place"]
        calls["place"] = 0
        queue.release(running[0])
        assert len(queue.schedule()) == 1
        return per_submit, calls["place"]

    assert placements_per_event(10_000) == placements_per_event(100)


def test_when_the_reserved_job_starts_the_next_oldest_is_reserved_before_others_start():
    queue = Scheduler(Capacity(4, 1000, 0), 1, 1, 0.0, Clock())
    busy = queue.submit("busy", JobSpec(command=["true"], tasks=3))
    assert busy is not None
    for key, tasks in (("first", 2), ("second", 3), ("narrow", 1)):
        assert queue.submit(key, JobSpec(command=["true"], tasks=tasks)) is None
    queue.release(busy)
    # "first" starts on two cores; "second" now holds three, so "narrow" may not take one.
    assert [key for key, _ in queue.schedule()] == ["first"]
    assert queue.reserved == "second"


def test_a_shrink_that_leaves_the_oldest_unable_to_fit_drops_its_hold():
    queue = Scheduler(Capacity(2, 1000, 0), 2, 2, 0.0, Clock())
    assert queue.submit("busy", JobSpec(command=["true"])) is not None
    assert queue.submit("two-nodes", JobSpec(command=["true"], nodes=2, tasks=4)) is None
    assert queue.submit("narrow", JobSpec(command=["true"])) is None  # held for two-nodes
    assert queue.shrink(1) == 1
    assert queue.unsettled
    assert [key for key, _ in queue.schedule()] == ["narrow"]
    assert queue.reserved is None


@pytest.mark.parametrize("reserve_after", [None, 0.0])
def test_what_the_queue_keeps_is_bounded_by_what_waits(reserve_after):
    """10,000 jobs pass through the queue behind a job that never starts (it needs the GPU a
    job that never ends holds; with a reservation it holds a core too), and 10,000 more wait and
    are cancelled: what the queue keeps stays proportional to what waits, not to what passed."""
    queue = Scheduler(Capacity(3, 1000, 1), 1, 1, reserve_after, Clock())
    gpu = JobSpec(command=["true"], gpus_per_task=1)
    assert queue.submit("forever", gpu) is not None
    assert queue.submit("stuck", gpu) is None
    narrow = JobSpec(command=["true"])
    running = None
    for key in range(10_000):
        shares = queue.submit(key, narrow)
        if shares is None and running is not None:
            queue.release(running)
            ((_, shares),) = queue.schedule()
        running = shares
    for key in range(10_000, 20_000):
        assert queue.submit(key, JobSpec(command=["true"], tasks=2)) is None
        assert queue.cancel(key)

    kept = len(queue._order) + sum(map(len, queue._buckets.values())) + len(queue._heads)
    assert queue.waiting <= 2 and kept <= 300
    assert queue.reserved == ("stuck" if reserve_after is not None else None)
