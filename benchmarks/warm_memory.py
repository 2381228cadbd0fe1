"""A long warm Parsl run in flat memory: `--batches` x `--batch` no-op apps (10 x 10,000)
through `EnsembleExecutor(workers=W)` and, in the same run, Parsl's `HighThroughputExecutor`
with W workers, each in a process of its own. After each batch (its Futures resolved and
dropped) it prints the resident memory of the workflow's process and of the process between it
and the workers: the ensemble's controller (apart, the default with workers) or HTEX's
interchange. Flat columns mean nothing grows with the number of apps run.

    python -m benchmarks.warm_memory [--batches 10] [--batch 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import parsl
from parsl.config import Config

from benchmarks.parsl_bench import cpu_model
from benchmarks.warm_workers import executor, noop

#: The measuring processes import this tree, and find HTEX's worker pool (a script beside this
#: Python) on PATH.
ENVIRONMENT = {
    **os.environ,
    "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def between_pid(made: object) -> int:
    """The controller's process (EnsembleExecutor) or the interchange's (HTEX)."""
    ensemble = getattr(made, "ensemble", None)
    if ensemble is not None:
        return ensemble.pid
    return made.interchange_proc.pid  # type: ignore[attr-defined]


def measure(kind: str, batches: int, batch: int, workers: int) -> None:
    """One executor, in this process: a line per batch."""
    made = executor(kind, workers)
    with parsl.load(Config(executors=[made], run_dir="runinfo")):
        between = between_pid(made)
        began = time.perf_counter()
        for number in range(1, batches + 1):
            futures = [noop() for _ in range(batch)]
            for future in futures:
                future.result()
            del futures
            seconds = time.perf_counter() - began
            print(
                f"| {kind} | {number * batch:,} | {seconds:.0f} | "
                f"{resident_mb(os.getpid()):.0f} | {resident_mb(between):.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--measure", choices=["warm", "htex"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.batches, args.batch, args.workers)
        return
    print(f"{os.cpu_count()} CPUs ({cpu_model()}); Python {sys.version.split()[0]}")
    print(
        "\n| executor | apps | seconds | workflow's RSS (MB) "
        "| controller's / interchange's RSS (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |", flush=True)
    for kind in ("warm", "htex"):
        command = [sys.executable, "-m", "benchmarks.warm_memory", "--measure", kind]
        command += ["--batches", str(args.batches), "--batch", str(args.batch)]
        command += ["--workers", str(args.workers)]
        with tempfile.TemporaryDirectory(prefix="warm-memory-") as directory:
            subprocess.run(command, cwd=directory, env=ENVIRONMENT, check=True)


if __name__ == "__main__":
    main()
