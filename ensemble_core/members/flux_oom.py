"""Did Flux's job shell see a job's task killed for memory? Read the report of its `oom` plugin.

Flux raises no `oom` exception. Where a site limits a job's memory with cgroups v2 (the systemd
execution service `exec.service = "sdexec"` with `exec.sdexec-properties.MemoryMax`, see
docs/flux.md), the kernel kills a task that goes over the limit with SIGKILL, and the job shell's
built-in `oom` plugin, which watches `memory.events` of the shell's cgroup, logs at error level
(flux-core 0.88 `src/shell/oom.c`):

    Memory cgroup out of memory: killed 1 task on HOST.
    memory.peak = 1.2G

The job then finishes with exit code 137 (128 + SIGKILL): that is all its main eventlog, and so
the journal, says. The plugin's log goes where the job's stderr goes: a `log` entry (component
`oom`) of the job's output eventlog `guest.output` in the KVS, or, when stderr goes to a file,
lines `flux-shell[RANK]: ERROR: oom: ...` in that file. The member looks in both, only for jobs
that ended by SIGKILL, once each, after their `clean`.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

#: How the plugin's report of a kill begins; it may be followed by "memory.peak = SIZE".
OOM_KILL = "Memory cgroup out of memory: "
#: How much of the end of an output file is searched (the report comes after the job's output).
TAIL_BYTES = 256 * 1024
_FILE_LINE = re.compile(r"^flux-shell\[\d+\]: ERROR: oom: (.*)$", re.MULTILINE)


def killed_by_sigkill(status: int) -> bool:
    """Whether a `finish` wait status says the job's task ended by SIGKILL (the OOM killer's
    signal): the shell exits 137 for it, and a raw signal status is checked too."""
    return status & 0x7F == signal.SIGKILL or (status & 0x7F == 0 and status >> 8 == 137)


def report_in_file(text: str) -> list[str]:
    """The oom plugin's messages in the text of a job's stderr file."""
    return _FILE_LINE.findall(text)


def report_in_output_eventlog(text: str) -> list[str]:
    """The oom plugin's messages among the `log` entries of a job's output eventlog (RFC 24)."""
    messages = []
    for line in text.splitlines():
        if '"log"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        context = entry.get("context") or {}
        if entry.get("name") == "log" and context.get("component") == "oom":
            messages.append(str(context.get("message", "")))
    return messages


def tail(path: str, size: int = TAIL_BYTES) -> str:
    with open(path, "rb") as stream:
        stream.seek(max(0, os.fstat(stream.fileno()).st_size - size))
        return stream.read().decode("utf-8", "replace")


def find_report(handle: Any, jobid: int, paths: list[str]) -> str | None:
    """The oom plugin's report for an inactive job, as one sentence, or None if it made none.

    `paths` are the job's output files, searched first (unreadable ones are skipped); if they hold
    no report, the job's output eventlog in the KVS is read. Raises OSError if that lookup fails."""
    messages: list[str] = []
    for path in paths:
        try:
            messages += report_in_file(tail(path))
        except OSError:
            continue
    if not _kills(messages):
        keys = {"id": jobid, "keys": ["guest.output"], "flags": 0}
        answer = handle.rpc("job-info.lookup", keys).get()
        messages = report_in_output_eventlog(answer.get("guest.output") or "")
    if not _kills(messages):
        return None  # the plugin's own trouble ("error reading memory.events") is no OOM
    report = dict.fromkeys(m.strip() for m in messages if m.startswith((OOM_KILL, "memory.peak")))
    return " ".join(report)


def _kills(messages: list[str]) -> bool:
    return any(message.startswith(OOM_KILL) for message in messages)
