"""A million jobs through the controller: flat memory and events per second.

One `submit` rule starts a group of 1,000,000 jobs on `ReplayMember`, which plays the recorded
Flux journal of 300 jobs (`tests/fixtures/flux/journal-300.jsonl`, 11 events a job) for fresh
job ids at once, so the controller's own cost is what is measured: submission, the job table,
outcome derivation, river statistics and the 20 rules of the event-path benchmark
(`rule_engine.py`: a job-event and a metric rule per group, over 10 groups). The process's peak
RSS and its RSS after 10k, 100k and 1M jobs show whether memory stays flat; events/s is what one
core sustains. Targets: peak RSS under 250 MB, at least 300,000 events/s.

`--jobs N` runs fewer jobs; `--state` keeps a state journal in a temporary directory (its cost:
issue 13's target is at most 15% fewer events/s than without).
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.rule_engine import GROUPS, twenty_rules
from ensemble_core.ensemble import Ensemble
from ensemble_core.rules.schema import EnsembleFile
from ensemble_core.state import StateJournal
from ensemble_core.testing.replay import ReplayMember

JOURNAL = Path(__file__).parents[1] / "tests" / "fixtures" / "flux" / "journal-300.jsonl"
CHECKPOINTS = (10_000, 100_000, 1_000_000)


def rss_mb() -> float:
    """The process's resident memory now, from /proc (MB)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config(jobs: int) -> EnsembleFile:
    """10 groups of `jobs / 10` jobs, each submitted at start, and the 20 rules."""
    per_group = jobs // len(GROUPS)
    return EnsembleFile.model_validate(
        {
            "jobs": [{"name": g, "command": "true", "count": per_group} for g in GROUPS],
            "rules": [
                *({"trigger": "start", "action": {"name": "submit", "label": g}} for g in GROUPS),
                *twenty_rules(),
            ],
        }
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--state", action="store_true", help="keep a state journal")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ensemble-state-") as directory:
        return run(args.jobs, StateJournal(directory) if args.state else None)


def run(jobs: int, journal: StateJournal | None) -> dict[str, float]:
    member = ReplayMember([JOURNAL])
    ensemble = Ensemble(member, config(jobs), state=journal)
    events_per_job = sum(len(p) for p in member.patterns["success"]) / len(
        member.patterns["success"]
    )
    samples: dict[int, float] = {}
    before = rss_mb()
    cpu_started = time.process_time()
    started = time.perf_counter()
    ensemble.start()
    checkpoints = [c for c in CHECKPOINTS if c <= jobs] or [jobs]
    for checkpoint in checkpoints:
        while _finished(ensemble) < checkpoint and not ensemble.wait(0.01):
            pass
        samples[checkpoint] = rss_mb()
    ensemble.wait()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    finished = _finished(ensemble)
    ensemble.close()
    assert finished == jobs // len(GROUPS) * len(GROUPS), finished
    events = finished * events_per_job
    result = {
        "jobs": finished,
        "seconds": elapsed,
        "events_per_second": events / elapsed,
        "events_per_cpu_second": events / cpu,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        **{f"rss_at_{n}_mb": mb for n, mb in samples.items()},
    }
    at = ", ".join(f"{n:,} jobs {mb:.0f} MB" for n, mb in samples.items())
    journaled = " with a state journal" if journal is not None else ""
    print(
        f"controller{journaled}: {finished:,} jobs ({events:,.0f} events, 20 rules, 10 groups) in "
        f"{elapsed:.1f} s = {result['events_per_second']:,.0f} events/s "
        f"({result['events_per_cpu_second']:,.0f} per CPU second); RSS {before:.0f} MB before, "
        f"{at}; peak {result['peak_rss_mb']:.0f} MB (python {platform.python_version()}); "
        "targets: 300,000 events/s, peak under 250 MB"
    )
    return result


def _finished(ensemble: Ensemble) -> int:
    groups = ensemble.snapshot()["groups"]
    return sum(entry.get("success", 0) + entry.get("failed", 0) for entry in groups.values())


if __name__ == "__main__":
    main(sys.argv[1:])
