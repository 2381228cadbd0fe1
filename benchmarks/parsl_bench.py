"""Parsl throughput: 200 no-op python apps, in one run, per executor.

- EnsembleExecutor on the local member, with its lean worker (one job per task);
- Parsl's ThreadPoolExecutor: no process per task, the DataFlowKernel's own ceiling;
- the same EnsembleExecutor whose worker first imports parsl, as Parsl's FluxExecutor's
  worker does: the job-per-task baseline.

Run: `python benchmarks/parsl_bench.py [--tasks N]`; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import parsl
from parsl import python_app
from parsl.config import Config
from parsl.executors.base import ParslExecutor
from parsl.executors.threads import ThreadPoolExecutor

from parsl_ensemble import EnsembleExecutor

WORKER_IMPORTING_PARSL = [
    sys.executable,
    "-c",
    "import parsl, sys; from parsl_ensemble.worker import main; sys.exit(main(sys.argv))",
]


@python_app
def noop():
    return None


def tasks_per_second(executor: ParslExecutor, tasks: int, run_dir: str) -> float:
    """Time `tasks` no-op apps submitted at once, after one warm-up task."""
    with parsl.load(Config(executors=[executor], run_dir=run_dir)):
        noop().result()
        start = time.perf_counter()
        for future in [noop() for _ in range(tasks)]:
            future.result()
        return tasks / (time.perf_counter() - start)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    tasks = parser.parse_args().tasks
    with tempfile.TemporaryDirectory(prefix="parsl-bench-") as directory:
        os.chdir(directory)
        runs = {
            "EnsembleExecutor, local member, lean worker": EnsembleExecutor(),
            "ThreadPoolExecutor (no process per task)": ThreadPoolExecutor(max_threads=4),
            "job per task, worker imports parsl (baseline)": EnsembleExecutor(
                label="baseline", worker_command=WORKER_IMPORTING_PARSL
            ),
        }
        rates = {
            name: tasks_per_second(executor, tasks, os.path.join(directory, "runinfo"))
            for name, executor in runs.items()
        }
    lean, baseline = rates[next(iter(runs))], rates[list(runs)[-1]]
    print(
        f"{tasks} no-op python apps; {os.cpu_count()} CPUs ({cpu_model()}); "
        f"Python {platform.python_version()}, parsl {parsl.__version__}\n"
    )
    print("| executor | tasks/s |\n|---|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"\nlean worker / baseline: {lean / baseline:.1f}x")


if __name__ == "__main__":
    main()
