"""The executor's results thread (`parsl_ensemble.resolver`): every item handed over is resolved,
in order, off the thread that handed it, even after one whose resolution failed; `shutdown`
returns once all were."""

from __future__ import annotations

import threading

from parsl_ensemble.resolver import Resolver


def test_items_resolve_in_order_on_one_thread_and_a_failure_stops_none(caplog):
    seen: list[tuple[int, str]] = []

    def resolve(number: int) -> None:
        if number == 3:
            raise RuntimeError("this one fails")
        seen.append((number, threading.current_thread().name))

    resolver = Resolver("test-results", resolve)
    putter = threading.Thread(target=resolver.put, args=(0,))  # any thread may hand over
    putter.start()
    putter.join()
    for number in range(1, 200):
        resolver.put(number)
    resolver.shutdown()
    assert [number for number, _ in seen] == [n for n in range(200) if n != 3]
    assert {name for _, name in seen} == {"test-results"}
    assert "resolving a job's Future failed" in caplog.text


def test_shutdown_without_items_starts_no_thread():
    resolver = Resolver("idle-results", lambda: None)
    resolver.shutdown()
    assert not any(thread.name == "idle-results" for thread in threading.enumerate())
