"""A real memory limit that the real Flux job shell's `oom` plugin reports, on a hybrid cgroup host.

Flux's `oom` plugin watches `memory.events` of the job shell's cgroup v2 (flux-core 0.88
`src/shell/oom.c`). On a host whose memory controller is bound to cgroup v1 (a "hybrid" hierarchy,
as on these CI machines) no v2 cgroup has that file, and the plugin disables itself ("no
memory.events"). This bridge plays the part of the kernel's v2 memory accounting, nothing else:

- a v1 memory cgroup with a real limit (`memory.limit_in_bytes`), its OOM killer switched off
  (`memory.oom_control`), so a task that goes over the limit is stopped by the kernel and an
  eventfd (`cgroup.event_control`) tells the bridge;
- a v2 cgroup for the Flux instance, whose directory is covered, in a private mount namespace,
  by a tmpfs holding `memory.events` and `memory.peak`, the files the plugin reads;
- on each OOM the bridge writes `oom_kill 1` (and the v1 peak) there, as the kernel writes into
  a v2 cgroup, gives the plugin a moment to log, then kills the cgroup's tasks with SIGKILL, as
  the kernel's OOM killer does, and sets the counter back for the next job.

A job joins the limited cgroup itself (`job_command`); on a Flux site the systemd execution
service puts every job in a cgroup of its own (docs/flux.md). Linux only; needs root.

    python flux_oom_bridge.py serve V1_DIR EVENTS_DIR    # inside the mount namespace
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup/unified")
#: How long the plugin gets to read `memory.events` before the tasks are killed.
REPORT_GRACE = 0.5


def unavailable() -> str | None:
    """Why the bridge cannot run here, or None."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux (cgroups and a mount namespace)"
    if not (V1_ROOT / "memory.limit_in_bytes").exists():
        return f"no cgroup v1 memory controller at {V1_ROOT}"
    if not (V2_ROOT / "cgroup.procs").exists():
        return f"no cgroup v2 hierarchy at {V2_ROOT} (the hybrid layout)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not on PATH"
    return None


def own_v1_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _number, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1_ROOT / path.lstrip("/")
    raise RuntimeError("this process is in no cgroup v1 memory hierarchy")


class Bridge:
    """The two cgroups of one instance; `wrap` turns a `flux start` command into one that runs
    in them with the bridge serving, `remove` deletes them once that command has ended."""

    def __init__(self, name: str, limit_bytes: int) -> None:
        self.v1 = own_v1_cgroup() / name
        self.v2 = V2_ROOT / name
        self.limit_bytes = limit_bytes

    def job_command(self, program: str) -> list[str]:
        """A job command that joins the limited cgroup, then runs `program` (a shell line)."""
        return ["sh", "-c", f"echo $$ > {self.v1}/cgroup.procs && exec {program}"]

    def wrap(self, command: list[str]) -> list[str]:
        for directory in (self.v1, self.v2):
            directory.mkdir(exist_ok=True)
        (self.v1 / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
        (self.v1 / "memory.oom_control").write_text("1")
        script = (
            "set -e\n"
            f"echo $$ > {self.v2}/cgroup.procs\n"
            f"mount -t tmpfs ensemble-oom-bridge {self.v2}\n"
            f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} serve {self.v1} {self.v2} &\n"
            "bridge=$!\n"
            "trap 'kill $bridge 2>/dev/null' EXIT\n"
            f"{shlex.join(command)}\n"
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def remove(self) -> None:
        for directory in (self.v2, self.v1):
            for _ in range(50):  # the last tasks may still be leaving
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def write_events(directory: Path, oom_kills: int) -> None:
    """Rewrite `memory.events` in place in one write of the same length, as the kernel updates
    it: a truncation would show the plugin an empty file (and a new file would end its watch)."""
    lines = ["low 0", "high 0", f"max {oom_kills}", f"oom {oom_kills}", f"oom_kill {oom_kills}"]
    path = directory / "memory.events"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.pwrite(descriptor, ("\n".join(lines) + "\n").encode(), 0)
    finally:
        os.close(descriptor)


def serve(v1: Path, events: Path) -> None:
    write_events(events, 0)
    (events / "memory.peak").write_text("0\n")
    notify = os.eventfd(0)
    control = os.open(v1 / "memory.oom_control", os.O_RDONLY)
    (v1 / "cgroup.event_control").write_text(f"{notify} {control}")
    while True:
        os.eventfd_read(notify)
        if "under_oom 1" not in (v1 / "memory.oom_control").read_text():
            continue
        peak = (v1 / "memory.max_usage_in_bytes").read_text()
        (events / "memory.peak").write_text(peak)
        write_events(events, 1)
        time.sleep(REPORT_GRACE)
        for pid in (v1 / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        time.sleep(REPORT_GRACE)
        write_events(events, 0)  # the next job's shell starts counting from 0
        (v1 / "memory.max_usage_in_bytes").write_text("0")


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(Path(sys.argv[2]), Path(sys.argv[3]))
