"""The controller's own CPU per job: `ensemble run` (20 rules, output files) against a bare loop.

Both run in this process, one after the other, on the same `true` jobs with the same
concurrency (one per core); what is compared is this process's own CPU time (user + system,
`RUSAGE_SELF`: the jobs' processes excluded) divided by the jobs. The bare loop is asyncio's
subprocess API and nothing else; `ensemble run` is the CLI's `main()` on an ensemble file with 10
groups and the 20 rules of the event-path benchmark, each job writing its output files. Target
(issue 12): at most 1.25 times the bare loop's CPU per job, so that one controller keeps a
64-core node busy with short jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.local_member import bare_loop
from benchmarks.rule_engine import GROUPS, twenty_rules
from ensemble_core import cli

CORES = os.cpu_count() or 1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ensemble_file(jobs: int, path: Path) -> None:
    per_group = jobs // len(GROUPS)
    document = {
        "jobs": [{"name": g, "command": "true", "count": per_group} for g in GROUPS],
        "rules": [
            *({"trigger": "start", "action": {"name": "submit", "label": g}} for g in GROUPS),
            *twenty_rules(),
        ],
    }
    path.write_text(yaml.safe_dump(document))


def measure(run) -> tuple[float, float]:
    """(wall seconds, own CPU seconds) of `run()`."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    run()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args(argv)
    jobs = args.jobs // len(GROUPS) * len(GROUPS)
    with tempfile.TemporaryDirectory(prefix="cpu-per-job-") as workdir:
        path = Path(workdir) / "ensemble.yaml"
        ensemble_file(jobs, path)
        command = ["run", str(path), "--cores", str(CORES), "--log-dir", f"{workdir}/logs"]
        devnull = open(os.devnull, "w")  # noqa: SIM115 (the summary goes nowhere)
        stdout, sys.stdout = sys.stdout, devnull
        try:
            ensemble_wall, ensemble_cpu = measure(lambda: cli.main(command))
        finally:
            sys.stdout = stdout
            devnull.close()
        bare_wall, bare_cpu = measure(lambda: asyncio.run(bare_loop(jobs, CORES)))
    ratio = ensemble_cpu / bare_cpu
    print(
        f"cpu per job, {jobs:,} `true` jobs, {CORES} at a time (python "
        f"{platform.python_version()}): bare asyncio loop {bare_cpu / jobs * 1e6:,.0f} us "
        f"({bare_wall:.1f} s wall), ensemble run with 20 rules and output files "
        f"{ensemble_cpu / jobs * 1e6:,.0f} us ({ensemble_wall:.1f} s wall): {ratio:.2f}x; "
        "target at most 1.25x"
    )
    return {"bare_cpu_us": bare_cpu / jobs * 1e6, "ensemble_cpu_us": ensemble_cpu / jobs * 1e6}


if __name__ == "__main__":
    main(sys.argv[1:])
