"""A Snakemake job on a warm worker: its `python -m snakemake ...` as an argv, not a shell line.

`format_job_exec` gives one shell line, `[export VAR='value' ... &&] python -m snakemake ARGS`,
which the cold path runs with `/bin/sh -c` inside a wrapper that gives the job a TMPDIR of its
own. A warm worker runs `python -m MODULE` in a child forked from a process that has imported
the module, but only when the command is that argv (warm_task.py). So the line is split here as
the shell would split it: the exports become the job's environment, the worker gives every task
a TMPDIR of its own, removed at its end, as the wrapper did, and the job runs through
`snakemake_executor_plugin_ensemble.job`, Snakemake's command line without the second its
process waits for after the job (job.py). A line with anything else (a `--precommand`, an
executor prefix or suffix, a pipe) keeps its shell and runs as before.

A job's Snakemake schedules only the job it was given (or a group job's few), which Snakemake's
greedy scheduler picks as its ILP scheduler would; the ILP one runs its solver (CBC) as a
process of its own for that, a tenth of what a warm job costs. So the job's `--scheduler ilp`
becomes `greedy`; the workflow's own Snakemake keeps its scheduler.
"""

from __future__ import annotations

import shlex

from ensemble_core.spec import JobSpec

#: Runs one job's Snakemake command line (job.py).
JOB_MODULE = "snakemake_executor_plugin_ensemble.job"


def in_process(spec: JobSpec, line: str) -> JobSpec:
    """`spec` with the job's Snakemake as an argv and its exports as environment, or `spec`
    unchanged when the line is more than that."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        return spec
    segments: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            segments.append([])
        elif word and set(word) <= set(lexer.punctuation_chars):
            return spec  # ; | > < & (...): a shell it is
        else:
            segments[-1].append(word)
    *exports, command = segments
    environment: dict[str, str] = {}
    for export in exports:
        if not export or export[0] != "export":
            return spec
        for assignment in export[1:]:
            name, equals, value = assignment.partition("=")
            if not equals or not name.isidentifier():
                return spec
            environment[name] = value
    if command[1:3] != ["-m", "snakemake"]:
        return spec
    command[2] = JOB_MODULE
    for index, word in enumerate(command[:-1]):
        if word == "--scheduler" and command[index + 1] == "ilp":
            command[index + 1] = "greedy"
    return spec.model_copy(
        update={"command": command, "environment": {**spec.environment, **environment}}
    )
