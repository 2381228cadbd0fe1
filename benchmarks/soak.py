"""`make soak`: the fault-injection run of tests/test_faults.py over many seeds and more jobs.

Each seed runs `ensemble_core.testing.soak.soak`: short real jobs on the local member wrapped in a
seeded FaultyMember (member calls that raise, events dropped, repeated, delayed, a stream that
breaks and resumes with overlap), with rules that resubmit, grow and shrink. Prints one row per
seed and exits 1 if any invariant broke (every job resolved exactly once, counts add up, no
event counted twice, no process left).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from collections import Counter

from ensemble_core.testing.soak import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per seed (default 1000)")
    parser.add_argument(
        "--workers", type=int, help="run the jobs on this many warm workers of the local member"
    )
    args = parser.parse_args(argv)
    injected: Counter[str] = Counter()
    jobs = attempts = 0
    seconds = 0.0
    broken = 0
    warm = f", {args.workers} warm workers" if args.workers else ""
    print(
        f"soak: {args.seeds} seed(s) x {args.jobs:,} jobs{warm}, python {platform.python_version()}"
    )
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="ensemble-soak-") as log_dir:
            result = soak(seed, args.jobs, log_dir, workers=args.workers)
        faults = sum(result.injected.values())
        status = "ok" if not result.broken else "BROKEN: " + "; ".join(result.broken)
        print(
            f"seed {seed}: {result.jobs:,} jobs, {result.attempts:,} attempts, {faults} faults "
            f"injected, {result.seconds:.1f} s: {status}",
            flush=True,
        )
        injected.update(result.injected)
        jobs += result.jobs
        attempts += result.attempts
        seconds += result.seconds
        broken += bool(result.broken)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(injected.items()))
    print(
        f"total: {jobs:,} jobs, {attempts:,} attempts, {sum(injected.values()):,} faults "
        f"({kinds}) in {seconds:.0f} s; seeds with a broken invariant: {broken}"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
