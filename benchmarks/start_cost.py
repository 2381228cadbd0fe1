"""`ensemble run`'s fixed cost: a one-job ensemble end to end, minus the job.

Runs `ensemble run` on an ensemble of one `true` job (no state journal, then with it) several
times and takes the median wall time; the job's own run time (from the report) is subtracted.
Beside it, the peer: a Python process that only starts and runs the same `true` job. Target
(issue 12): a fixed cost of at most 0.2 s on a quiet machine.

Each figure comes with the CPU time of the processes (user + system: `ensemble run`, its reaper
and the job), which varies less than the wall time when the machine is busy, and the load
average before and after. A second peer shows what no change to ensemble_core can save: a
process that imports every module of the standard library and of other packages that the run
with the state journal imports, and nothing else (none of ensemble_core's code runs).
`--baseline DIR` runs the same commands with the code of another tree (a checkout of an older
commit: PYTHONPATH=DIR) taking turns with this one, so that both see the same machine.

    python -m benchmarks.start_cost [--rounds 7] [--baseline /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
#: Prints the modules `ensemble run` imported (run in the work directory, after the run).
MODULES = (
    "import json, sys; from ensemble_core.cli import main; "
    "sys.argv = ['ensemble', 'run', 'one.yaml', '--json']; main(); "
    "print(json.dumps(sorted(sys.modules)), file=sys.stderr)"
)
#: Imports the modules named in argv, as far as they import on their own.
IMPORTS = (
    "import importlib, sys\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except Exception:\n"
    "        pass\n"
)
#: `ensemble run` as the console script starts it, from whichever tree PYTHONPATH names first.
ENSEMBLE = "import sys; from ensemble_core.cli import program; sys.argv[0] = 'ensemble'; program()"
WAYS = (("run", ["--no-state"]), ("run with state", []))


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the command and the processes it waited for) and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, done.stdout


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--baseline", metavar="DIR", help="another tree to take turns with")
    args = parser.parse_args(argv)
    # Bytecode is written and read as an installed package's would be (a shell that sets
    # PYTHONDONTWRITEBYTECODE makes every start compile each module changed since its .pyc).
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    trees = {"": env}
    if args.baseline:
        trees["baseline "] = {**env, "PYTHONPATH": str(Path(args.baseline).resolve())}
    wall: dict[str, list[float]] = {"peer": [], "imports": []}
    cpu: dict[str, list[float]] = {"peer": [], "imports": []}
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="start-cost-") as directory:
        workdir = Path(directory)
        (workdir / "one.yaml").write_text(ONE_JOB)
        listed = subprocess.run(
            [sys.executable, "-c", MODULES], cwd=workdir, env=env, capture_output=True, text=True
        )
        others = [
            name
            for name in json.loads(listed.stderr.splitlines()[-1])
            if name.partition(".")[0] not in ("ensemble_core", "__main__")
        ]
        peers = {"peer": [sys.executable, "-c", PEER], "imports": [sys.executable, "-c", IMPORTS]}
        peers["imports"] += others
        for _ in range(args.rounds):
            for peer, command in peers.items():
                seconds, used, _ = timed(command, workdir, env)
                wall[peer].append(seconds)
                cpu[peer].append(used)
            for prefix, tree_env in trees.items():
                for way, extra in WAYS:
                    command = [sys.executable, "-c", ENSEMBLE, "run", "one.yaml", "--json", *extra]
                    seconds, used, stdout = timed(command, workdir, tree_env)
                    job = json.loads(stdout)["groups"]["one"]["duration"]["max"]
                    wall.setdefault(prefix + way, []).append(seconds - job)
                    cpu.setdefault(prefix + way, []).append(used)
    medians = {
        way: {"wall": statistics.median(wall[way]), "cpu": statistics.median(cpu[way])}
        for way in wall
    }
    print(
        f"start cost, median of {args.rounds} (python {platform.python_version()}, load average "
        f"{load_before} before, {load_average()} after; wall time, CPU time in brackets):"
    )
    print(f"  a Python process running `true`: {_shown(medians['peer'])}")
    print(
        f"  a Python process importing the {len(others)} other modules the run imports: "
        f"{_shown(medians['imports'])}"
    )
    for prefix in trees:
        for way, _ in WAYS:
            what = "`ensemble run`" if way == "run" else "`ensemble run` with the state journal"
            tree = f" ({args.baseline})" if prefix else ""
            shown = _shown(medians[prefix + way])
            print(f"  {what}{tree} on one `true` job, minus the job: {shown}")
    print("  target: at most 0.2 s")
    return medians


def _shown(median: dict[str, float]) -> str:
    return f"{median['wall']:.3f} s ({median['cpu']:.3f} s)"


if __name__ == "__main__":
    main()
