"""Warm workers against their peers, each part in one run on this machine (issue 14).

- Parsl: `--tasks` no-op python apps (2,000) through `EnsembleExecutor(workers=W)` on the local
  member (its controller in a process of its own, the default with workers), against Parsl's
  `HighThroughputExecutor` with W workers, the job-per-task `EnsembleExecutor` on a tenth as
  many apps (its rate does not depend on the count), and warm workers with the controller on a
  thread of the workflow's process (`controller="thread"`). Each
  executor first runs 10 x W apps, so that every worker has started (and learned) before the
  clock starts; the executors take turns for `--rounds` rounds, each measurement in a process
  of its own, and the median counts. `--baseline DIR` adds the warm executor of another tree
  (a `git worktree` of an older commit, on PYTHONPATH) to the turns.
- Snakemake: the 30-job workflow and the 6-job chain of benchmarks/snakemake_bench.py through
  `--executor ensemble --ensemble-workers 4`, against `--executor local` and (in the first round
  only) the job-per-task ensemble, at `-j 4`, taking turns for `--rounds` rounds: wall time and
  the chain's command gap (end of one job's shell command to the start of the next one's).
- Start: from `parsl.load` to the first app's result, and `cleanup()`, for the same executors
  (each in a process of its own, its imports not counted).
- Inside one worker: the CPU a task costs the worker and its task's process, for `/bin/true`
  and a Parsl no-op app, forked and in a reused process (the worker driven directly, one task
  always waiting in it).
- Flux: `--flux-jobs` `true` jobs (300) through the Flux member with W warm workers (each a
  Flux job) against the job-per-task Flux member, on the instance FLUX_URI names or a fresh
  `flux start --test-size=2`; skipped without flux.

    python -m benchmarks.warm_workers [--tasks 2000] [--workers 2] [--rounds 3] [--flux-jobs 300]
        [--only parsl|start|worker|snakemake|flux] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import parsl
from parsl import python_app
from parsl.app.errors import wrap_error
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.executors.base import ParslExecutor
from parsl.providers import LocalProvider

from benchmarks import snakemake_bench
from benchmarks.flux_throughput import instance
from benchmarks.parsl_bench import cpu_model
from ensemble_core.api import open_ensemble
from ensemble_core.errors import MemberError
from ensemble_core.members.flux import import_flux
from ensemble_core.members.warm import WORKER_MODULE
from ensemble_core.members.warm_protocol import ADDRESS_ENV, NAME_ENV, SECRET_ENV, encode
from ensemble_core.spec import JobSpec
from parsl_ensemble import EnsembleExecutor, calls
from parsl_ensemble.executor import WARM_PRELOAD, WARM_REUSE

SNAKEMAKE_WORKERS = 4


@python_app
def noop():
    return None


def parsl_rate(make: Callable[[], ParslExecutor], tasks: int, workers: int, run_dir: str) -> float:
    """Tasks per second for `tasks` no-op apps submitted at once, after a warm-up."""
    with parsl.load(Config(executors=[make()], run_dir=run_dir)):
        for future in [noop() for _ in range(10 * workers)]:
            future.result()
        began = time.perf_counter()
        for future in [noop() for _ in range(tasks)]:
            future.result()
        return tasks / (time.perf_counter() - began)


def executor(kind: str, workers: int) -> ParslExecutor:
    """The executor a row of the Parsl part measures."""
    if kind == "warm":
        return EnsembleExecutor(label="warm", workers=workers)
    if kind == "warm-thread":
        return EnsembleExecutor(label="warm", workers=workers, controller="thread")
    if kind == "htex":
        return HighThroughputExecutor(
            label="htex",
            max_workers_per_node=workers,
            address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )
    return EnsembleExecutor(label="cold")


def rate_apart(kind: str, tasks: int, workers: int, tree: str, directory: str) -> float:
    """`parsl_rate` in a process of its own (`--measure`), with the code of `tree` (PYTHONPATH):
    every row starts as fresh as the others, and a baseline tree's executor and workers run its
    own code (this file runs as it is, importing the rest from that tree)."""
    arguments = ["--measure", kind, "--tasks", str(tasks), "--workers", str(workers)]
    return float(apart(arguments, tree, directory).split()[-1])


def apart(arguments: list[str], tree: str, directory: str) -> str:
    """What this file prints, run with `arguments` in a process of its own."""
    command = [sys.executable, "-P", os.path.abspath(__file__), *arguments]
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run(command, env=env, cwd=directory, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{arguments} with {tree}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return done.stdout


def start_times(kind: str, workers: int, run_dir: str) -> tuple[float, float, float]:
    """Seconds for `parsl.load`, then for the first app's result, then for `cleanup()`."""
    began = time.perf_counter()
    dfk = parsl.load(Config(executors=[executor(kind, workers)], run_dir=run_dir))
    loaded = time.perf_counter()
    noop().result()
    first = time.perf_counter()
    dfk.cleanup()
    return loaded - began, first - loaded, time.perf_counter() - first


def start_part(workers: int, rounds: int) -> None:
    """From `parsl.load` to the first app's result, and `cleanup()`, each executor in a process
    of its own (its imports not counted), taking turns; medians."""
    here = str(Path(__file__).resolve().parent.parent)
    rows = {
        f"EnsembleExecutor(workers={workers}) (controller apart)": "warm",
        f"HighThroughputExecutor, {workers} workers": "htex",
        "EnsembleExecutor, one job per task": "cold",
    }
    seen: dict[str, list[list[float]]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="warm-start-") as directory:
        for _ in range(rounds):
            for name, kind in rows.items():
                arguments = ["--measure-start", kind, "--workers", str(workers)]
                seen[name].append([float(x) for x in apart(arguments, here, directory).split()])
    print(f"\n### Parsl: from `parsl.load` to the first result, median of {rounds} rounds\n")
    print("| executor | `parsl.load` | first app's result | `cleanup()` |\n|---|---:|---:|---:|")
    for name, times in seen.items():
        load, first, cleanup = (statistics.median(column) for column in zip(*times, strict=True))
        print(f"| {name} | {load:.2f} s | {first:.2f} s | {cleanup:.2f} s |")


def parsl_part(tasks: int, workers: int, rounds: int, baseline: str | None) -> None:
    here = str(Path(__file__).resolve().parent.parent)
    runs: dict[str, tuple[str, int, str]] = {
        f"EnsembleExecutor(workers={workers}), local member": ("warm", tasks, here),
        f"HighThroughputExecutor, {workers} workers": ("htex", tasks, here),
        "EnsembleExecutor, one job per task": ("cold", max(tasks // 10, 1), here),
        f"EnsembleExecutor(workers={workers}, controller='thread')": ("warm-thread", tasks, here),
    }
    if baseline:
        old = str(Path(baseline).resolve())
        runs[f"EnsembleExecutor(workers={workers}), baseline {baseline}"] = ("warm", tasks, old)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    loads = []
    with tempfile.TemporaryDirectory(prefix="warm-bench-") as directory:
        for _ in range(rounds):
            for name, (kind, count, tree) in runs.items():
                rates[name].append(rate_apart(kind, count, workers, tree, directory))
            loads.append(os.getloadavg()[0])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    warm, htex, cold = list(medians.values())[:3]
    print(f"\n### Parsl: {tasks} no-op apps, median of {rounds} rounds\n")
    print("| executor | apps | tasks/s | rounds |\n|---|---:|---:|---|")
    for name, (_, count, _) in runs.items():
        each = ", ".join(f"{rate:.0f}" for rate in rates[name])
        print(f"| {name} | {count} | {medians[name]:.0f} | {each} |")
    each_round = ", ".join(f"{w / h:.0%}" for w, h in zip(*list(rates.values())[:2], strict=True))
    ratios = f"warm / HTEX: {warm / htex:.0%}, by round {each_round} (target 100%, floor 50%)"
    print(f"\n{ratios}; warm / cold: {warm / cold:.1f}x")
    if baseline:
        columns = list(rates.values())
        new_old = zip(columns[0], columns[4], strict=True)
        print(f"new / baseline by round: {', '.join(f'{n / o:.0%}' for n, o in new_old)}")
    print(f"load average (1 min) after each round: {', '.join(f'{x:.1f}' for x in loads)}")


def snakemake_part(rounds: int) -> None:
    warm = f"ensemble --ensemble-workers {SNAKEMAKE_WORKERS}"
    snakemake_bench.EXECUTORS[warm] = [
        *("--executor", "ensemble", "--ensemble-workers", str(SNAKEMAKE_WORKERS))
    ]
    order = ["local", warm, "ensemble"]
    walls: dict[str, list[float]] = {executor: [] for executor in order}
    gaps: dict[str, list[float]] = {executor: [] for executor in order}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            # The job-per-job ensemble (40 s) runs in the first round only.
            for executor in order if round_ == 0 else order[:2]:
                workdir = Path(tmp, str(round_), executor)
                wide = snakemake_bench.run(executor, workdir / "wide", snakemake_bench.WORKFLOW)
                snakemake_bench.run(executor, workdir / "chain", snakemake_bench.CHAIN_WORKFLOW)
                walls[executor].append(wide)
                gaps[executor].extend(snakemake_bench.command_gaps(workdir / "chain"))
            loads.append(os.getloadavg()[0])
    print(f"\n### Snakemake: {snakemake_bench.JOBS} trivial jobs and a chain of "
          f"{snakemake_bench.CHAIN}, -j 4, median of {rounds} rounds\n")  # fmt: skip
    print("| executor | 30 jobs, wall s | rounds | chain command gap, mean / max s |")
    print("|---|---:|---|---:|")
    for executor in order:
        each = ", ".join(f"{wall:.1f}" for wall in walls[executor])
        print(f"| `--executor {executor}` | {statistics.median(walls[executor]):.1f} | {each} | "
              f"{statistics.mean(gaps[executor]):.2f} / {max(gaps[executor]):.2f} |")  # fmt: skip
    ratios = [w / lo for w, lo in zip(walls[warm], walls["local"], strict=True)]
    print(f"\nwarm / local wall time: median {statistics.median(ratios):.2f}x, by round "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (target at most 2x); warm chain gap mean "
          f"{statistics.mean(gaps[warm]):.2f} s (target under 0.2 s); load average after each "
          f"round {', '.join(f'{load:.1f}' for load in loads)}")  # fmt: skip


def flux_rate(uri: str, jobs: int, settings: dict[str, object]) -> float:
    """Jobs per second for `jobs` `true` jobs through the Flux member, after a warm-up."""
    ensemble = open_ensemble("flux", member_settings={"flux_uri": uri, **settings})
    try:
        for handle in [ensemble.submit(JobSpec(command=["true"])) for _ in range(10)]:
            handle.wait()
        began = time.perf_counter()
        handles = [ensemble.submit(JobSpec(command=["true"])) for _ in range(jobs)]
        for handle in handles:
            handle.wait()
        elapsed = time.perf_counter() - began
        failed = [h for h in handles if not (h.outcome and h.outcome.ok)]
        if failed:
            raise SystemExit(f"flux: {len(failed)} jobs failed, e.g. {failed[0].reason}")
        return jobs / elapsed
    finally:
        ensemble.close()


def flux_part(jobs: int, workers: int, rounds: int) -> None:
    try:
        import_flux()
    except MemberError as error:
        print(f"\n### Flux: skipped ({error})")
        return
    with instance() as uri:
        if uri is None:
            print("\n### Flux: skipped (no flux on PATH and no FLUX_URI)")
            return
        ways = {f"warm workers ({workers} Flux jobs)": {"workers": workers}, "job per task": {}}
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, settings in ways.items():
                rates[name].append(flux_rate(uri, jobs, settings))
    print(f"\n### Flux: {jobs} `true` jobs, median of {rounds} rounds\n")
    print("| Flux member | jobs/s |\n|---|---:|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} |")


def worker_cpu(argv: list[str], tasks: int, scratch: Path, reuse: list[str]) -> tuple[float, float]:
    """One warm worker driven directly (this process plays its member, keeping one task
    waiting in it): (CPU ms per task of the worker itself, of its tasks' processes, those that
    ended and the reused ones that still run)."""
    server = socket.create_server(("127.0.0.1", 0))
    environment = {
        **os.environ,
        # This tree's worker, also when the benchmark runs from a worktree of another commit
        # (`-P` leaves the working directory off the worker's path: it would find the install).
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        ADDRESS_ENV: f"127.0.0.1:{server.getsockname()[1]}",
        NAME_ENV: "w1",
        SECRET_ENV: "benchmark",
    }
    worker = subprocess.Popen([sys.executable, "-P", "-m", WORKER_MODULE], env=environment)
    connection, _ = server.accept()
    replies = connection.makefile("rb")
    connection.sendall(encode({"challenge": "c"}))
    replies.readline()  # hello
    connection.sendall(encode({"op": "size", "cores": 1, "memory_mb": None, "gpus": 0}))
    connection.sendall(encode({"op": "preload", "modules": WARM_PRELOAD}))
    connection.sendall(encode({"op": "reuse", "modules": reuse}))

    def run(count: int) -> None:
        order = {"op": "run", "argv": argv, "env": {}, "cwd": None}
        order["stdout"] = str(scratch / "out.log")
        sent = done = 0
        while done < count:
            while sent < min(done + 2, count):
                connection.sendall(encode({**order, "id": f"t{sent}"}))
                sent += 1
            if json.loads(replies.readline())["op"] == "done":
                done += 1

    def cpu() -> list[float]:
        own, ended = times(worker.pid)
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        running = [sum(times(int(child))[0]) for child in children]
        return [*own, ended[0] + ended[1] + sum(running), 0.0]

    run(20)
    before = cpu()
    run(tasks)
    user, system, child_user, child_system = (
        (b - a) * 1000 / tasks for a, b in zip(before, cpu(), strict=True)
    )
    connection.sendall(encode({"op": "stop"}))
    worker.wait(30)
    connection.close()
    server.close()
    return user + system, child_user + child_system


def times(pid: int) -> tuple[list[float], list[float]]:
    """CPU seconds of a process (user, system), and of its children that ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return [0.0, 0.0], [0.0, 0.0]
    values = [int(value) / os.sysconf("SC_CLK_TCK") for value in fields[11:15]]
    return values[:2], values[2:]


def worker_part(tasks: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        call = calls.pack(wrap_error(noop_function), (), {})
        (scratch / "noop.in").write_bytes(call)
        app = [
            *(sys.executable, "-P", "-m", "parsl_ensemble.worker"),
            *(f"{scratch / 'noop.in'}@0+{len(call)}", str(scratch / "noop.out")),
        ]
        commands = {
            "`/bin/true` (forked, then executed)": (["/bin/true"], []),
            "a Parsl no-op app (forked, in-process)": (app, []),
            "a Parsl no-op app (in a reused process)": (app, WARM_REUSE),
        }
        print(f"\n### Inside one worker: CPU per task, {tasks} tasks\n")
        print("| task | worker ms | task process ms |\n|---|---:|---:|")
        for name, (argv, reuse) in commands.items():
            own, forked = worker_cpu(argv, tasks, scratch, reuse)
            print(f"| {name} | {own:.2f} | {forked:.2f} |")


def noop_function() -> None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flux-jobs", type=int, default=300)
    parser.add_argument("--only", choices=["parsl", "start", "worker", "snakemake", "flux"])
    parser.add_argument(
        "--baseline", metavar="DIR", help="Parsl part: another tree's warm workers, taking turns"
    )
    parser.add_argument(
        "--measure", choices=["warm", "htex", "cold", "warm-thread"], help=argparse.SUPPRESS
    )
    parser.add_argument("--measure-start", choices=["warm", "htex", "cold"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    bin_dir = str(Path(sys.executable).parent)  # HTEX starts its interchange and workers by name
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if args.measure:  # one row of the Parsl part, in a process of its own (rate_apart)
        made = functools.partial(executor, args.measure, args.workers)
        print(parsl_rate(made, args.tasks, args.workers, os.path.abspath("runinfo")))
        return
    if args.measure_start:  # one row of the start part, in a process of its own
        print(*start_times(args.measure_start, args.workers, os.path.abspath("runinfo")))
        return
    print(
        f"{os.cpu_count()} CPUs ({cpu_model()}); Python {platform.python_version()}, "
        f"parsl {parsl.__version__}; {time.strftime('%Y-%m-%d')}"
    )
    if args.only in (None, "parsl"):
        parsl_part(args.tasks, args.workers, args.rounds, args.baseline)
    if args.only in (None, "start"):
        start_part(args.workers, args.rounds)
    if args.only in (None, "worker"):
        worker_part()
    if args.only in (None, "snakemake"):
        snakemake_part(args.rounds)
    if args.only in (None, "flux"):
        flux_part(args.flux_jobs, args.workers, args.rounds)


if __name__ == "__main__":
    main()
