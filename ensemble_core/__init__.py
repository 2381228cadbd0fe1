"""The ensemble core: one controller between workflow engines and queues."""

from ensemble_core.spec import JobSpec

__all__ = ["JobSpec"]
