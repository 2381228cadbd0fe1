"""`ensemble run`'s fixed cost: a one-job ensemble end to end, minus the job.

Runs `ensemble run` on an ensemble of one `true` job (no state journal, then with it) several
times and takes the median wall time; the job's own run time (from the report) is subtracted.
Beside it, the peer: a Python process that only starts and runs the same `true` job. Target
(issue 12): a fixed cost of at most 0.2 s on a quiet machine.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 7
ONE_JOB = (
    "jobs:\n  - {name: one, command: 'true'}\n"
    "rules:\n  - {trigger: start, action: {name: submit, label: one}}\n"
)
PEER = "import subprocess; subprocess.run(['true'])"


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


def main() -> dict[str, float]:
    ensemble = str(Path(sys.executable).with_name("ensemble"))
    results: dict[str, list[float]] = {"peer": [], "run": [], "run with state": []}
    with tempfile.TemporaryDirectory(prefix="start-cost-") as directory:
        workdir = Path(directory)
        (workdir / "one.yaml").write_text(ONE_JOB)
        for _ in range(ROUNDS):
            results["peer"].append(timed([sys.executable, "-c", PEER], workdir)[0])
            for way, extra in (("run", ["--no-state"]), ("run with state", [])):
                seconds, stdout = timed([ensemble, "run", "one.yaml", "--json", *extra], workdir)
                job = json.loads(stdout)["groups"]["one"]["duration"]["max"]
                results[way].append(seconds - job)
    medians = {way: statistics.median(values) for way, values in results.items()}
    print(
        f"start cost, median of {ROUNDS} (python {platform.python_version()}): a Python process "
        f"running `true` {medians['peer']:.3f} s; `ensemble run` on one `true` job, minus the job: "
        f"{medians['run']:.3f} s, with the state journal {medians['run with state']:.3f} s; "
        "target at most 0.2 s"
    )
    return medians


if __name__ == "__main__":
    main()
