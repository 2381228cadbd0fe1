"""500 `true` jobs through `ensemble run` (local member) against a bare asyncio loop.

The bare loop runs the same 500 commands with the same concurrency (one per core) and nothing
else: no events, metrics, rules or output files. It is the ceiling a local executor can reach on
this machine. Target: `ensemble run` at 80% of it or better. The CLI's fixed cost (start-up,
mostly importing pydantic and river with numpy, and the summary) is measured apart with a run of
zero jobs, so both the end-to-end and the per-job figures are shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = 500
CORES = os.cpu_count() or 1


async def bare_loop(jobs: int, concurrency: int) -> None:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            process = await asyncio.create_subprocess_exec("true")
            await process.wait()

    await asyncio.gather(*(one() for _ in range(jobs)))


def ensemble_run(jobs: int, workdir: Path) -> float:
    path = workdir / f"jobs-{jobs}.yaml"
    path.write_text(
        f"jobs:\n  - {{name: many, command: 'true', count: {jobs}}}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: many}\n"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ensemble_core.cli", "run", str(path), "--json",
         "--cores", str(CORES)],
        cwd=workdir, capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    groups = json.loads(result.stdout)["groups"]
    assert groups.get("many", {}).get("success", 0) == jobs, result.stdout
    return elapsed


def main() -> dict[str, float]:
    started = time.perf_counter()
    asyncio.run(bare_loop(JOBS, CORES))
    bare = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        fixed = ensemble_run(0, Path(workdir))
        ours = ensemble_run(JOBS, Path(workdir))
    jobs_only = ours - fixed
    print(
        f"local member: {JOBS} true jobs at concurrency {CORES}: bare asyncio loop "
        f"{JOBS / bare:.0f} jobs/s ({bare:.2f} s); ensemble run {JOBS / ours:.0f} jobs/s "
        f"end to end ({ours:.2f} s) = {bare / ours:.0%} of the ceiling; without the CLI's fixed "
        f"{fixed:.2f} s (a run of no jobs) {JOBS / jobs_only:.0f} jobs/s = "
        f"{bare / jobs_only:.0%}; target 80%"
    )
    return {"bare_jobs_per_second": JOBS / bare, "ensemble_jobs_per_second": JOBS / ours}


if __name__ == "__main__":
    main()
