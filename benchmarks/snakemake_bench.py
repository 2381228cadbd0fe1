"""Snakemake on three executors: `ensemble` (local member), `cluster-generic`, `local`.

1. Wall time of a workflow of 30 trivial jobs at `-j 4`. cluster-generic submits each job script
   as a background process on this machine and checks its marker files at its default interval.
2. Latency along a chain of 6 dependent jobs, two ways:
   - queue latency (remote executors): from the end of a job's spawned `snakemake` process to the
     start of the next one, sampled from /proc every 5 ms. This is the executor's part: noticing
     the end, Snakemake's bookkeeping, submitting the dependent job.
   - command gap (all three): from the last line of a job's shell command to the first line of
     the next one's, from timestamps the jobs write. For the remote executors it adds the start-up
     and teardown of the spawned `snakemake` inside every job.

Targets (issue 3): ensemble at most half of cluster-generic's wall time, queue latency under 1 s.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

JOBS = 30
CHAIN = 6
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

WORKFLOW = f"""
rule all:
    input: expand("out/{{i}}.txt", i=range({JOBS}))

rule trivial:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""

CHAIN_WORKFLOW = f"""
rule all:
    input: "chain/{CHAIN - 1}.txt"

rule chain:
    input: lambda wildcards: [f"chain/{{int(wildcards.i) - 1}}.txt"] if int(wildcards.i) else []
    output: "chain/{{i}}.txt"
    shell: "date +%s.%N > {{output}}; sleep 0.2; date +%s.%N >> {{output}}"
"""

#: Runs the job script in the background and prints its pid as the job id.
SUBMIT = """#!/bin/sh
nohup sh "$1" > "$1.out" 2>&1 &
echo $!
"""

EXECUTORS = {
    "ensemble": ["--executor", "ensemble"],
    "cluster-generic": ["--executor", "cluster-generic", "--cluster-generic-submit-cmd"],
    "local": ["--executor", "local"],
}


class SpawnWatch(threading.Thread):
    """When each spawned `snakemake --target-jobs chain:i=N` process is first and last seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        target = re.compile(rb"--target-jobs[\0 ]'?chain:i=(\d+)")
        while not self.stop.is_set():
            now = time.time()
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    command = Path(entry.path, "cmdline").read_bytes()
                except OSError:
                    continue
                match = target.search(command)
                if match:
                    step = int(match.group(1))
                    self.first.setdefault(step, now)
                    self.last[step] = now
            time.sleep(0.005)

    def latencies(self) -> list[float]:
        return [self.first[i] - self.last[i - 1] for i in range(1, CHAIN)]


def run(executor: str, workdir: Path, snakefile: str) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Snakefile").write_text(textwrap.dedent(snakefile))
    args = list(EXECUTORS[executor])
    if executor == "cluster-generic":
        submit = workdir / "submit.sh"
        submit.write_text(SUBMIT)
        submit.chmod(0o755)
        args.append(str(submit))
    started = time.perf_counter()
    result = subprocess.run(
        [SNAKEMAKE, *args, "-j", "4", "--quiet"], cwd=workdir, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{executor} failed:\n{result.stderr[-3000:]}")
    return elapsed


def command_gaps(workdir: Path) -> list[float]:
    stamps = [(workdir / "chain" / f"{i}.txt").read_text().split() for i in range(CHAIN)]
    return [float(stamps[i][0]) - float(stamps[i - 1][1]) for i in range(1, CHAIN)]


def describe(values: list[float]) -> str:
    return f"mean {statistics.mean(values):.2f} s, max {max(values):.2f} s"


def main() -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in EXECUTORS:
            wall = run(executor, Path(tmp, executor, "wide"), WORKFLOW)
            watch = SpawnWatch()
            watch.start()
            chain_dir = Path(tmp, executor, "chain")
            run(executor, chain_dir, CHAIN_WORKFLOW)
            watch.stop.set()
            watch.join()
            gaps = command_gaps(chain_dir)
            line = f"{executor:16} {JOBS} jobs: {wall:6.1f} s   command gap: {describe(gaps)}"
            figures[executor] = {"wall_s": wall, "gap_mean_s": statistics.mean(gaps)}
            if executor != "local":
                latencies = watch.latencies()
                line += f"   queue latency: {describe(latencies)}"
                figures[executor].update(
                    latency_mean_s=statistics.mean(latencies), latency_max_s=max(latencies)
                )
            print(line, flush=True)
    ratio = figures["ensemble"]["wall_s"] / figures["cluster-generic"]["wall_s"]
    print(
        f"ensemble / cluster-generic wall time: {ratio:.0%} (target at most 50%); "
        f"ensemble queue latency max {figures['ensemble']['latency_max_s']:.2f} s "
        "(target under 1 s)"
    )
    return figures


if __name__ == "__main__":
    main()
