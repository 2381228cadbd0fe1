"""The local member's reaper: when the controller dies, however it dies, its jobs die with it.

The member starts this program once (`python -S -I local_reaper.py MARKER PID RUN_DIR`, a few
milliseconds) in a session of its own, with the read end of a pipe as its stdin; the controller
holds the write end. Every task the member starts carries MARKER (a variable name unique to the
member, `ENSEMBLE_LOCAL_RUN_<hex>`) in its environment, and whatever the task starts inherits it.
So nothing is said per job: the reaper sleeps in `select` until

- the controller writes `close` (it ended its jobs itself): the reaper exits quietly; or
- the pipe closes without it, or the process PID exits (watched through a pidfd, in case a forked
  child of the controller still holds the pipe): the controller is gone. The reaper then ends
  every process whose environment holds MARKER, and their process groups (which catches a task's
  children that replaced their environment), as the member cancels a job: SIGTERM, so that a
  job's traps run (a Snakemake job removes its temporary directory), then SIGKILL to what is
  left after GRACE_SECONDS, scanning /proc again until none is left; then it removes the empty
  files of the run's output directory, and the directory if it is empty.

It imports nothing but four modules of the standard library and runs without `site`, isolated
from PYTHON* variables: it starts in about 10 ms. (Run by the member as a file: not imported.)
"""

import os
import select
import sys
import time

#: Linux's SIGTERM and SIGKILL (the `signal` module is not imported: it costs the reaper more
#: than the rest of its start).
SIGTERM, SIGKILL = 15, 9

#: How long a job has between SIGTERM and SIGKILL, as when the member cancels it.
GRACE_SECONDS = 2.0
#: The longest the reaper goes on killing (processes stuck in the kernel die late).
REAP_SECONDS = 12.0
#: A scan that finds nothing is made once more after this long: a task forked by the dying
#: controller may have been between fork and exec, not yet carrying the marker.
CONFIRM_SECONDS = 0.05


def main(marker: str, controller: int, run_dir: str) -> None:
    watched = [0]
    try:
        watched.append(os.pidfd_open(controller))
    except ProcessLookupError:
        reap(marker.encode(), run_dir)  # it was gone before the reaper was up
        return
    except OSError:
        pass  # no pidfds on this kernel: the pipe alone tells
    while True:
        ready, _, _ = select.select(watched, [], [])
        if 0 not in ready:
            break  # the controller exited with the pipe still open elsewhere
        said = os.read(0, 64)
        if said.startswith(b"close"):
            return
        if not said:
            break
    reap(marker.encode(), run_dir)


def reap(marker: bytes, run_dir: str) -> None:
    """End every process carrying the marker, and their groups, until none is left: each is
    sent SIGTERM once, and SIGKILL once its grace is over. A process that appears during the
    grace in a group already sent SIGTERM is left alone until then: it is that job's own
    cleanup (a trap's `rm -rf` of its TMPDIR), which a second SIGTERM would cut short."""
    now = time.monotonic()
    deadline, grace_ends = now + REAP_SECONDS, now + GRACE_SECONDS
    own_group = os.getpgid(0)
    terminated: set[int] = set()
    terminated_groups: set[int] = set()
    confirmed = False
    while time.monotonic() < deadline:
        found = marked(marker)
        if not found:
            if confirmed:
                break
            confirmed = True
            time.sleep(CONFIRM_SECONDS)
            continue
        confirmed = False
        graceful = time.monotonic() < grace_ends
        for pid, group in found:
            if graceful and (pid in terminated or group in terminated_groups):
                continue
            terminated.add(pid)
            whole = group if group not in (0, 1, own_group) else None
            if graceful and whole is not None:
                terminated_groups.add(whole)
            kill(pid, whole, SIGTERM if graceful else SIGKILL)
        time.sleep(0.01)
    tidy(run_dir)


def marked(marker: bytes) -> list[tuple[int, int]]:
    """(pid, process group) of every process whose environment holds `marker`."""
    entry = marker + b"="
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                data = environ.read()
            if data.startswith(entry) or b"\0" + entry in data:
                found.append((int(name), os.getpgid(int(name))))
        except OSError:
            continue  # gone meanwhile, or another user's
    return found


def kill(pid: int, group: int | None, signal: int) -> None:
    """Signal the process's group (if it may be signalled whole), then the process."""
    for send, target in ((os.killpg, group), (os.kill, pid)):
        if target is not None:
            try:  # noqa: SIM105 (contextlib would cost the reaper's start more than it does)
                send(target, signal)
            except OSError:
                pass  # gone meanwhile


def tidy(run_dir: str) -> None:
    """The run's empty output files go (the member made every file there), then the directory
    if nothing is left in it."""
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and not entry.stat().st_size:
                    os.unlink(entry.path)
        os.rmdir(run_dir)
    except OSError:
        pass  # output was left, or the directory is gone


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
