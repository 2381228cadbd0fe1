"""Throughput on a real Flux instance: `true` jobs through the ensemble against bare flux-python.

Each way submits the same number of `true` jobs (300 by default) and stops the clock when the last
one's `clean` event arrives:

- bare: flux-python alone, `submit_async` for every job, then one `JournalConsumer`;
- member: the `FluxMember` driven directly on an asyncio loop;
- controller: `open_ensemble("flux")`, what `ensemble run --member flux` and the adapters use;
- processes: the bare loop as a Python process of its own, and `ensemble run FILE --member flux`
  (when the CLI is installed), both timed from outside, start-up and shutdown included.

The ways take turns on the same instance, each round starting with the next one, so that drift
(the instance's growing job history, other load on the machine) hits them alike. The instance is
the one FLUX_URI names, else a fresh `flux start --test-size=2`. Without flux, or without an
importable flux-python, it prints why and exits 0.

    python -m benchmarks.flux_throughput [--jobs 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.events import JobEvent
from ensemble_core.members.flux import FluxMember, import_flux
from ensemble_core.spec import JobSpec

BASES = {False: "bare flux-python", True: "bare flux-python (process)"}
_PRINT_URI = "import os, sys; print(os.environ['FLUX_URI'], flush=True); sys.stdin.read()"


@contextmanager
def instance() -> Iterator[str | None]:
    """FLUX_URI if set, else the URI of a 2-broker test instance that lives for the block."""
    if os.environ.get("FLUX_URI"):
        yield os.environ["FLUX_URI"]
        return
    flux = shutil.which("flux")
    if flux is None:
        yield None
        return
    command = [flux, "start", "--test-size=2", sys.executable, "-c", _PRINT_URI]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            yield proc.stdout.readline().strip() or None
        finally:
            proc.stdin.close()
            proc.wait(60)


def bare(flux: Any, uri: str, jobs: int) -> float:
    """Seconds for `jobs` true jobs with flux-python alone: submit_async, then the journal."""
    handle = flux.Flux(uri)
    consumer = flux.job.JournalConsumer(handle, full=False).start()
    jobspec = flux.job.JobspecV1.from_command(["true"])
    jobspec.cwd = os.getcwd()
    jobspec.environment = dict(os.environ)
    text = jobspec.dumps()
    began = time.perf_counter()
    futures = [flux.job.submit_async(handle, text) for _ in range(jobs)]
    pending = {int(future.get_id()) for future in futures}
    while pending:
        event = consumer.poll()
        if event.name == "clean":
            pending.discard(int(event.jobid))
    elapsed = time.perf_counter() - began
    consumer.stop()
    return elapsed


def member(uri: str, jobs: int) -> float:
    """Seconds for `jobs` true jobs through the FluxMember on an asyncio loop."""

    async def scenario() -> float:
        flux_member = FluxMember(flux_uri=uri)
        cleaned: set[int] = set()
        all_clean = asyncio.Event()
        ids: set[int] = set()

        def emit(event: JobEvent) -> None:
            if event.name == "clean":
                cleaned.add(event.jobid)
                if ids and cleaned >= ids:
                    all_clean.set()

        await flux_member.start(emit)
        began = time.perf_counter()
        spec = JobSpec(command=["true"])
        ids.update(await asyncio.gather(*(flux_member.submit(spec) for _ in range(jobs))))
        if cleaned >= ids:
            all_clean.set()
        await all_clean.wait()
        elapsed = time.perf_counter() - began
        await flux_member.close()
        return elapsed

    return asyncio.run(scenario())


def controller(uri: str, jobs: int) -> float:
    """Seconds for `jobs` true jobs through the controller, as front doors submit them."""
    from ensemble_core.api import open_ensemble

    ensemble = open_ensemble("flux", member_settings={"flux_uri": uri})
    try:
        began = time.perf_counter()
        handles = [ensemble.submit(JobSpec(command=["true"])) for _ in range(jobs)]
        for handle in handles:
            handle.wait()
        elapsed = time.perf_counter() - began
        failed = [h for h in handles if not (h.outcome and h.outcome.ok)]
        if failed:
            raise SystemExit(f"controller: {len(failed)} jobs failed, e.g. {failed[0].reason}")
        return elapsed
    finally:
        ensemble.close()


def cli(uri: str, jobs: int) -> float:
    """Seconds for `ensemble run FILE --member flux` on `jobs` true jobs, start-up included."""
    text = (
        f"jobs:\n  - {{name: t, command: 'true', count: {jobs}}}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: t}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "true.yaml")
        path.write_text(text)
        command = [ensemble_script(), "run", str(path), "--member", "flux"]
        env = {**os.environ, "FLUX_URI": uri}
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp)
        elapsed = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"ensemble run failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def bare_process(uri: str, jobs: int) -> float:
    """Seconds for the bare loop run as a process of its own, start-up included."""
    command = [sys.executable, __file__, "--bare-once", "--jobs", str(jobs)]
    began = time.perf_counter()
    subprocess.run(command, env={**os.environ, "FLUX_URI": uri}, check=True)
    return time.perf_counter() - began


def ensemble_script() -> str:
    """The `ensemble` command of this environment ("" when the CLI is not installed)."""
    beside = Path(sys.executable).with_name("ensemble")
    return str(beside) if beside.exists() else shutil.which("ensemble") or ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare-once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        flux = import_flux()
    except MemberError as error:
        print(f"flux benchmark skipped: {error}")
        return 0
    if args.bare_once:
        bare(flux, os.environ["FLUX_URI"], args.jobs)
        return 0
    with instance() as uri:
        if uri is None:
            print("flux benchmark skipped: no FLUX_URI and no `flux` on PATH to start an instance")
            return 0
        version = flux.Flux(uri).attr_get("version")
        ways: dict[str, Callable[[], float]] = {
            "bare flux-python": lambda: bare(flux, uri, args.jobs),
            "FluxMember": lambda: member(uri, args.jobs),
            "controller": lambda: controller(uri, args.jobs),
        }
        ways["bare flux-python (process)"] = lambda: bare_process(uri, args.jobs)
        if ensemble_script():
            ways["ensemble run (process)"] = lambda: cli(uri, args.jobs)
        rates: dict[str, list[float]] = {name: [] for name in ways}
        names = list(ways)
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                rates[name].append(args.jobs / ways[name]())
    print(f"Flux {version}, {args.jobs} true jobs, {args.rounds} rounds, {os.cpu_count()} cores")
    print("jobs/s: median (each round); ratio to the bare loop run the same way")
    for name, values in rates.items():
        base = statistics.median(rates[BASES[name.endswith("(process)")]])
        median = statistics.median(values)
        each = ", ".join(f"{value:.1f}" for value in values)
        print(f"{name:28} {median:6.1f} ({each})  {median / base:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
