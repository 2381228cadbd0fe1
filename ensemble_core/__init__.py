"""The ensemble core: one controller between workflow engines and queues."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ensemble_core.spec import JobSpec

__all__ = ["JobSpec"]


def __getattr__(name: str) -> Any:
    """`JobSpec` on first use (PEP 562): a warm worker imports this package and must stay small,
    for it forks every task (pydantic alone would make each fork slower)."""
    if name == "JobSpec":
        from ensemble_core.spec import JobSpec

        return JobSpec
    raise AttributeError(f"module 'ensemble_core' has no attribute '{name}'")
