"""20,000 `true` jobs through `ensemble run` (local member) against a bare asyncio loop.

The bare loop runs the same commands with the same concurrency (one per core) and nothing else:
no events, metrics, rules or output files. It is the ceiling a local executor can reach on this
machine. Both run as processes of their own, so each one's peak resident memory is measured
(`wait4`'s ru_maxrss). For `ensemble run` the script also counts the files left in the log
directory, once with the default output (a file per job, empty ones removed) and once with
`output: run` (one labelled file for the run). The CLI's fixed cost (start-up, imports, summary)
is measured apart with a run of zero jobs, and the rate is shown with and without it.
Targets (issue 12): 90% of the bare loop's rate end to end, peak RSS under 150 MB.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

JOBS = 20_000
CORES = os.cpu_count() or 1


async def bare_loop(jobs: int, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec("true")
            await process.wait()

    await asyncio.gather(*(one() for _ in range(jobs)))


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: str


def measured(command: list[str], cwd: Path) -> Run:
    """Run a process to its end: wall time, its peak RSS, what it printed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}: {stdout[-500:]}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


def ensemble_run(jobs: int, workdir: Path, output: str) -> tuple[Run, int]:
    """`ensemble run` of `jobs` true jobs; (the run, files left in its log directory)."""
    path = workdir / f"jobs-{jobs}-{output}.yaml"
    log_dir = workdir / f"logs-{jobs}-{output}"
    path.write_text(
        f"jobs:\n  - {{name: many, command: 'true', count: {jobs}}}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: many}\n"
        f"limits: {{max_jobs: {max(jobs, 1)}}}\n"
        f"member: {{output: {output}, log_dir: {log_dir}}}\n"
    )
    command = [sys.executable, "-m", "ensemble_core.cli", "run", str(path), "--json",
               "--cores", str(CORES)]  # fmt: skip
    run = measured(command, workdir)
    groups = json.loads(run.stdout)["groups"]
    assert groups.get("many", {}).get("success", 0) == jobs, run.stdout[-500:]
    files = sum(len(names) for _, _, names in os.walk(log_dir))
    return run, files


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        bare = measured([sys.executable, __file__, "--bare"], Path(workdir))
        bare_seconds = float(bare.stdout)
        fixed, _ = ensemble_run(0, Path(workdir), "job")
        runs = {output: ensemble_run(JOBS, Path(workdir), output) for output in ("job", "run")}
    print(
        f"local member: {JOBS} true jobs at concurrency {CORES}: bare asyncio loop "
        f"{JOBS / bare_seconds:.0f} jobs/s ({bare_seconds:.2f} s), peak RSS "
        f"{bare.peak_rss_mb:.0f} MB; ensemble run's fixed cost (no jobs) {fixed.seconds:.2f} s"
    )
    figures = {"bare_jobs_per_second": JOBS / bare_seconds}
    for output, (run, files) in runs.items():
        jobs_only = run.seconds - fixed.seconds
        print(
            f"  ensemble run, output {output}: {JOBS / run.seconds:.0f} jobs/s end to end "
            f"({run.seconds:.2f} s) = {bare_seconds / run.seconds:.0%} of the bare loop "
            f"(target 90%); without the fixed cost {JOBS / jobs_only:.0f} jobs/s = "
            f"{bare_seconds / jobs_only:.0%}; peak RSS {run.peak_rss_mb:.0f} MB (target 150); "
            f"files left {files}"
        )
        figures[f"{output}_jobs_per_second"] = JOBS / run.seconds
    return figures


if __name__ == "__main__":
    if sys.argv[1:] == ["--bare"]:
        started = time.perf_counter()
        asyncio.run(bare_loop(JOBS, CORES))
        print(time.perf_counter() - started)
    else:
        main()
