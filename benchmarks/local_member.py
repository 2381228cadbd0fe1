"""500 `true` jobs through `ensemble run` (local member) against a bare asyncio loop.

The bare loop runs the same 500 commands with the same concurrency (one per core) and nothing
else: no events, metrics, rules or output files. It is the ceiling a local executor can reach on
this machine. Target: `ensemble run` at 80% of it or better, start-up of the CLI included.
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
    path = workdir / "many.yaml"
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
    success = json.loads(result.stdout)["groups"]["many"]["success"]
    assert success == jobs, result.stdout
    return elapsed


def main() -> dict[str, float]:
    started = time.perf_counter()
    asyncio.run(bare_loop(JOBS, CORES))
    bare = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as workdir:
        ours = ensemble_run(JOBS, Path(workdir))
    ratio = bare / ours
    print(
        f"local member: {JOBS} true jobs at concurrency {CORES}: bare asyncio loop "
        f"{JOBS / bare:.0f} jobs/s ({bare:.2f} s), ensemble run {JOBS / ours:.0f} jobs/s "
        f"({ours:.2f} s, CLI start-up included) = {ratio:.0%} of the ceiling; target 80%"
    )
    return {"bare_jobs_per_second": JOBS / bare, "ensemble_jobs_per_second": JOBS / ours}


if __name__ == "__main__":
    main()
