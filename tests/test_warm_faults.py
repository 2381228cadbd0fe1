"""Fault injection with warm workers: the seeded soak of tests/test_faults.py (jobs that succeed,
fail, time out, are cancelled waiting or running; rules that resubmit, grow and shrink; member
calls that raise, events dropped, repeated, delayed, a stream that breaks) with its local member
running warm workers. Every job resolves exactly once, the counts add up, no process is left."""

from __future__ import annotations

from ensemble_core.testing.soak import soak

SEED = 20261123
JOBS = 200


def test_warm_workers_keep_every_invariant_under_faults(tmp_path):
    result = soak(SEED, JOBS, tmp_path / "logs", workers=2)
    assert result.broken == []
    assert {"submit-error", "drop", "duplicate", "delay", "break"} <= set(result.injected)
    assert sum(result.outcomes.values()) == JOBS
    assert result.attempts > JOBS  # failures and timeouts were resubmitted
