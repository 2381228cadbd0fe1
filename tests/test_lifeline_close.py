"""The local member's close waits for its reaper to exit, and reaps it, also when the reaper
is still starting (a one-job run closes a few ms after it started the reaper)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ensemble_core.members.local import LocalMember


def test_close_right_after_start_waits_for_the_reaper_and_reaps_it(log_dir):
    async def main() -> int:
        member = LocalMember(log_dir=log_dir)
        await member.start(lambda event: None)
        pid = member.reaper_pid
        assert pid is not None
        await member.close()
        assert member.reaper_pid is None
        return pid

    for _ in range(3):
        pid = asyncio.run(main())
        assert not Path(f"/proc/{pid}").exists()  # exited and reaped: not even a zombie
