"""`python -m snakemake_executor_plugin_ensemble.job ARGS`: `python -m snakemake ARGS` for one
job, which ends when the job has.

A spawned Snakemake runs one job, and its scheduler's rate limiter (`--max-jobs-per-timespan`,
100 per second unless set) starts a `threading.Timer` of one timespan after each scheduling round
to wake the scheduler again. That thread is not a daemon, so the interpreter waits for it before
it exits: each job's process outlives the job's work by up to a second, and so does the job
on a warm worker, which ends the way the interpreter would. Once Snakemake's command line has
returned, its scheduler is done and nothing is left for those timers to wake: this cancels them
(only those: a timer the job's own code started runs out as it would).

Imported (not run), as a warm worker imports it before forking jobs from itself, it also builds
Snakemake's argument parser once: that fills Snakemake's plugin registries, singletons that scan
the whole import path when first used, which is half of what starting a job costs. And it fills
two caches of the standard library that every job's Snakemake would fill for itself: the
platform's description, which it prints (each job ran `uname -p` in a process of its own to find
the processor's name), and the tokenizer's expressions, which it parses the Snakefile with (2 ms
to compile; from Python 3.12 on the tokenizer is in C and has none).
"""

from __future__ import annotations

import io
import platform
import sys
import tokenize

from snakemake.cli import get_argument_parser
from snakemake.cli import main as snakemake_main

from snakemake_executor_plugin_ensemble.executor import cancel_scheduler_timers


def main() -> None:
    try:
        snakemake_main(sys.argv[1:])
    finally:
        cancel_scheduler_timers()


if __name__ == "__main__":
    main()
else:
    get_argument_parser()
    platform.platform()
    for _ in tokenize.generate_tokens(io.StringIO("rule a:\n").readline):
        pass
