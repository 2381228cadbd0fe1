"""The local member's jobs end with the controller, however it ends (its reaper, local_lifeline).

A controller here is a Python process of its own driving a LocalMember, killed with SIGKILL as
the kernel's OOM killer or `kill -9` would: no code of it runs after that. What its jobs started
must go too: a shell's children in the task's process group, a grandchild that made a session
of its own (`setsid`), and one that dropped its environment (`env -i`) but stayed in the group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ensemble_core.members import local_reaper
from ensemble_core.members.local import LocalMember
from ensemble_core.testing.processes import processes_with
from ensemble_core.testing.waiting import eventually

#: How long the reaper may take to end every process of the jobs (it takes well under 1 s).
GONE_SECONDS = 10

#: A controller of its own: `fork` makes a child that keeps a copy of everything the controller
#: holds open (the reaper's pipe too), as `multiprocessing` does, and outlives it.
CONTROLLER = """
    import asyncio, os, sys, time
    from ensemble_core.members.local import LocalMember
    from ensemble_core.spec import JobSpec

    async def main():
        member = LocalMember(cores=4, log_dir="logs")
        await member.start(lambda event: None)
        for command in sys.argv[2:]:
            await member.submit(JobSpec(command=["bash", "-c", command]))
        holder = os.fork() if sys.argv[1] == "fork" else -1
        if holder == 0:
            time.sleep(600)
            os._exit(0)
        print(member.reaper_pid, member.output_dir, holder, flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
"""


@pytest.mark.parametrize("fork", ["no-fork", "fork"], ids=["pipe closed", "pipe held by a fork"])
def test_a_controller_killed_with_sigkill_leaves_no_process_of_its_jobs(tmp_path: Path, fork):
    tag = f"lifeline-{os.getpid()}-{time.monotonic_ns()}"
    commands = [
        f"(exec -a {tag}-background sleep 300) & exec -a {tag}-shell sleep 300",
        f"setsid bash -c 'exec -a {tag}-own-session sleep 300' & wait",
        f"env -i bash -c 'exec -a {tag}-no-environment sleep 300' & wait",
        f"echo said; exec -a {tag}-talks sleep 300",
    ]
    (tmp_path / "controller.py").write_text(textwrap.dedent(CONTROLLER))
    controller = subprocess.Popen(
        [sys.executable, "controller.py", fork, *commands],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    holder = -1
    try:
        assert controller.stdout is not None
        reaper, run_dir, holder_pid = controller.stdout.readline().split()
        holder = int(holder_pid)
        until(lambda: len(started_as(tag)) == 5, "the jobs never started", controller)
        time.sleep(0.2)  # the talking job has written its line
        controller.kill()
        controller.wait()
        until(
            lambda: processes_with(tag, besides=holder) == [],  # the holder is the controller's
            "processes of the jobs outlived the controller",
            timeout=GONE_SECONDS,
        )
        until(lambda: not alive(int(reaper)), "the reaper did not exit", timeout=GONE_SECONDS)
    finally:
        controller.kill()
        controller.wait()
        if holder > 0:
            os.kill(holder, signal.SIGKILL)
    # Empty files were removed as a job's end removes them; the output kept.
    assert os.listdir(tmp_path / run_dir) == ["default-4.out"]
    assert (tmp_path / run_dir / "default-4.out").read_text() == "said\n"


def test_a_quiet_close_ends_the_reaper_and_a_killed_reaper_is_replaced(log_dir):
    member = LocalMember(log_dir=log_dir)
    seen: dict[str, object] = {}

    async def main() -> None:
        await member.start(lambda event: None)
        first = member.reaper_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if member.reaper_pid not in (None, first):
                break
        seen["replaced"] = member.reaper_pid not in (None, first)
        second = member.reaper_pid
        await member.close()
        seen["after close"] = (member.reaper_pid, alive(second))

    asyncio.run(main())
    assert seen == {"replaced": True, "after close": (None, False)}
    assert os.listdir(log_dir) == []  # no job wrote: the run's directory went at close


def until(
    condition, failure: str, process: subprocess.Popen | None = None, timeout: float = 60
) -> None:
    """Wait for `condition`; fail saying `failure` at the timeout, or if `process` ended (with
    the end of what it wrote on stderr, if that is a pipe)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        if process is not None and process.poll() is not None:
            said = process.communicate()[1] if process.stderr else ""
            raise AssertionError(f"{failure}: it exited with {process.returncode}: {said[-2000:]}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie whose parent has not reaped it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def started_as(text: str) -> list[str]:
    """Command lines that begin with `text`."""
    return [command for command in processes_with(text) if command.startswith(text)]


def test_a_jobs_cleanup_after_sigterm_is_not_cut_short(tmp_path: Path):
    """The reaper's SIGTERM reaches the job's group once: what the job's trap then starts (a
    Snakemake job's `rm -rf` of its TMPDIR) runs to its end within the grace."""
    marker = "ENSEMBLE_LOCAL_RUN_TEST_CLEANUP"
    done = tmp_path / "cleaned"
    job = subprocess.Popen(
        ["bash", "-c", f"trap 'sleep 0.3 && touch {done}; exit 143' TERM; sleep 100 & wait"],
        env={**os.environ, marker: "1"},
        start_new_session=True,
    )
    eventually(lambda: len(local_reaper.marked(marker.encode())) >= 2, GONE_SECONDS)
    local_reaper.reap(marker.encode(), str(tmp_path / "no-run-dir"))
    assert job.wait(GONE_SECONDS) == 143
    assert done.exists()  # the trap's `sleep` was not sent a second SIGTERM
    assert not local_reaper.marked(marker.encode())
