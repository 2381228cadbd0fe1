"""A fault-injection run of the controller on real local processes, and its invariants.

`soak(seed, jobs, log_dir)` submits `jobs` short jobs (successes, failures, walltime timeouts,
some cancelled as soon as submitted, long ones cancelled while they run) to the real local
member wrapped in a `FaultyMember`,
with rules that resubmit, grow and shrink, then closes the ensemble and checks what must hold
whatever was injected:

- every handle resolved, and exactly once;
- per group, the counts add up: submitted = success + failed + cancelled, none pending or
  running, every attempt counted as submitted once, every attempt that started as finished once
  (an event delivered twice is counted once);
- no process of the run is left.

`make test` runs one fixed seed (tests/test_faults.py); `make soak` runs many
(benchmarks/soak.py) and reports the figures in docs/performance.md.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ensemble_core.ensemble import Ensemble
from ensemble_core.jobs import JobHandle
from ensemble_core.members.base import Member
from ensemble_core.members.local import LocalMember
from ensemble_core.members.warm import WarmMember
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from ensemble_core.testing.faults import Faults, FaultyMember
from ensemble_core.testing.processes import processes_with

#: Rules a long-running ensemble would have: retry failures and timeouts, follow the backlog.
SOAK_RULES = """
rules:
  - trigger: job-fail
    group: flaky
    action: {name: resubmit, repetitions: 1}
  - trigger: job-timeout
    action: {name: resubmit, resources: {walltime: "x4"}, repetitions: 1}
  - trigger: metric
    name: queue.pending
    when: "> 20"
    action: {name: grow, repetitions: 1000, cooldown: 0.2s}
  - trigger: metric
    name: queue.pending
    when: 0
    action: {name: shrink, repetitions: 1000, cooldown: 0.2s}
"""

#: The faults of one run: every kind, often enough to meet each path many times.
SOAK_FAULTS = {
    "submit_error": 0.02,
    "cancel_error": 0.5,
    "resize_error": 0.3,
    "drop": 0.02,
    "duplicate": 0.05,
    "delay": 0.005,
    "stream_break": 0.002,
}


@dataclass
class SoakResult:
    seed: int
    jobs: int
    seconds: float
    injected: dict[str, int]
    outcomes: dict[str, int]
    attempts: int
    #: Each invariant that did not hold, in words (empty: all held).
    broken: list[str] = field(default_factory=list)


def soak(
    seed: int,
    jobs: int,
    log_dir: str | Path,
    cancel_share: float = 0.02,
    workers: int | None = None,
) -> SoakResult:
    """One seeded run; see the module's docstring for what is checked. `workers`: the local
    member runs the jobs on that many warm workers (up to twice as many as rules grow)."""
    marker = f"soak-{uuid.uuid4().hex[:12]}"
    draw = random.Random(seed)
    local: Member = LocalMember(cores=2, max_nodes=3, log_dir=str(log_dir))
    if workers is not None:
        local = WarmMember(local, workers=workers, max_workers=2 * workers)
    member = FaultyMember(local, Faults(seed=seed, **SOAK_FAULTS))
    ensemble = Ensemble(member, parse(SOAK_RULES, "soak rules"))
    resolutions: Counter[int] = Counter()
    lock = threading.Lock()

    def resolved(handle: JobHandle) -> None:
        with lock:
            resolutions[handle.key] += 1

    started = time.monotonic()
    ensemble.start()
    handles = []
    try:
        long = []
        for index in range(jobs):
            spec = _job(draw, marker, index)
            handle = ensemble.submit(spec)
            handle.add_done_callback(resolved)
            handles.append(handle)
            if spec.group == "long":
                long.append(handle)
            elif draw.random() < cancel_share:
                ensemble.cancel(handle)
        for handle in long:  # cancelled while they run (the member's cancel is called)
            deadline = time.monotonic() + 30
            while handle.attempts[-1].phase < 2 and not handle.done():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            ensemble.cancel(handle)
        for handle in handles:
            handle.wait(120)
    finally:
        ensemble.close()
    seconds = time.monotonic() - started
    summary = ensemble.snapshot()["groups"]
    result = SoakResult(
        seed=seed,
        jobs=jobs,
        seconds=round(seconds, 2),
        injected=dict(member.injected),
        outcomes=dict(Counter(str(h.outcome) for h in handles)),
        attempts=sum(len(h.attempts) for h in handles),
    )
    result.broken = _broken_invariants(handles, resolutions, summary, marker)
    return result


def _job(draw: random.Random, marker: str, index: int) -> JobSpec:
    """A job of one of five kinds; `marker` (its `$0`) finds its processes later."""
    kinds = ["ok", "flaky", "slow", "timeout", "long"]
    kind = draw.choices(kinds, weights=[68, 10, 10, 10, 2])[0]
    script = {
        "ok": "exit 0",
        "flaky": f"exit {index % 2}",
        "slow": "sleep 0.05",
        "timeout": "sleep 0.3",
        "long": "sleep 3",
    }[kind]
    walltime = 0.1 if kind == "timeout" else None
    return JobSpec(command=["sh", "-c", script, marker], group=kind, walltime=walltime)


def _broken_invariants(
    handles: list[JobHandle],
    resolutions: Counter[int],
    summary: dict[str, dict],
    marker: str,
) -> list[str]:
    broken = []
    unresolved = [h.key for h in handles if not h.done()]
    if unresolved:
        broken.append(f"{len(unresolved)} handle(s) never resolved: {unresolved[:5]}")
    twice = [key for key, count in resolutions.items() if count != 1]
    if twice or len(resolutions) != len(handles):
        broken.append(f"handles resolved other than once: {twice[:5]} of {len(resolutions)}")
    for group, counts in summary.items():
        ended = sum(counts.get(key, 0) for key in ("success", "failed", "cancelled"))
        if counts["submitted"] != ended or counts["pending"] or counts["running"]:
            broken.append(f"group {group}: counts do not add up: {counts}")
    attempts = [a for h in handles for a in h.attempts]
    submitted = sum(counts["submitted"] for counts in summary.values())
    if submitted != len(attempts):
        broken.append(f"{submitted} submissions counted for {len(attempts)} attempts")
    started = sum(a.record.start_time is not None for a in attempts)
    finished = sum(counts["finished"] for counts in summary.values())
    if finished != started:
        broken.append(f"{finished} attempts counted as finished, {started} started")
    left = processes_with(marker)
    if left:
        broken.append(f"{len(left)} process(es) left running: {left[:3]}")
    return broken
