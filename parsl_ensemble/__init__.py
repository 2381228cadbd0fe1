"""Parsl front door of the ensemble core: `from parsl_ensemble import EnsembleExecutor`.

The executor is loaded on first use (PEP 562): the worker, `parsl_ensemble.worker`, runs inside
every job and must not import parsl, which the executor does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EnsembleExecutor"]


def __getattr__(name: str) -> Any:
    if name == "EnsembleExecutor":
        from parsl_ensemble.executor import EnsembleExecutor

        return EnsembleExecutor
    raise AttributeError(f"module 'parsl_ensemble' has no attribute '{name}'")
