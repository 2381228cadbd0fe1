"""Config file for Parsl's own test suite: one EnsembleExecutor on the local member.

`pytest $PARSL/tests --config tests/parsl_config.py` (see tests/test_parsl_suite.py).
"""

from parsl.config import Config

from parsl_ensemble import EnsembleExecutor


def fresh_config() -> Config:
    return Config(executors=[EnsembleExecutor(label="ensemble", member="local")])
