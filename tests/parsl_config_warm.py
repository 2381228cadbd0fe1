"""Config file for Parsl's own test suite: one EnsembleExecutor with warm workers on the local
member, every task in a reused process of a worker, as by default (tests/test_parsl_suite.py)."""

from parsl.config import Config

from parsl_ensemble import EnsembleExecutor


def fresh_config() -> Config:
    return Config(executors=[EnsembleExecutor(label="ensemble", member="local", workers=2)])
