"""Waiting for something another process or thread does: a test that sleeps a fixed time and
then asserts fails on a loaded machine, and one that waits without a deadline hangs. One loop
with a deadline, for every test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], within: float = 30.0, every: float = 0.05) -> T:
    """The first truthy value of `condition()`, looked at every `every` seconds for `within`
    seconds; its last (falsy) value if none came. It is looked at once at least."""
    deadline = time.monotonic() + within
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(every)
    return value
