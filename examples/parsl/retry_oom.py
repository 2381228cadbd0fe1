"""A Parsl workflow whose largest task outgrows its memory and is saved by the retry-oom rule.

Five `fill` apps each hold some megabytes for a second, all asking for 128 MB. The 200 MB one is
killed for memory (oom); the shared rule set `retry-oom` resubmits it with twice the memory, so
its Future still resolves with the result, as one Parsl try. Run: python examples/parsl/retry_oom.py
"""

from __future__ import annotations

import tempfile

import parsl
from parsl import python_app
from parsl.config import Config

from parsl_ensemble import EnsembleExecutor


@python_app
def fill(megabytes: int, parsl_resource_specification: dict | None = None) -> int:
    """Hold `megabytes` of memory for a second; return how many were held."""
    import time

    block = b"x" * (megabytes * 2**20)
    time.sleep(1)
    return len(block) // 2**20


def main() -> None:
    run_dir = tempfile.mkdtemp(prefix="parsl-retry-oom-")
    executor = EnsembleExecutor(rules=["retry-oom"], member_settings={"log_dir": run_dir})
    with parsl.load(Config(executors=[executor], run_dir=run_dir)):
        sizes = [20, 40, 60, 80, 200]
        futures = [fill(mb, parsl_resource_specification={"memory": 128}) for mb in sizes]
        print("held (MB):", [future.result() for future in futures])
        for action in executor.ensemble.actions:
            job = f" job {action['job']}" if "job" in action else ""
            print(f"rule {action['rule']} ({action['action']}){job}: {action['detail']}")


if __name__ == "__main__":
    main()
