"""JobSpec to and from what each queue reads: Flux jobspec v1, Kubernetes Jobs, Slurm scripts."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Translation:
    """A translated job and the JobSpec fields the target format could not carry."""

    document: Any
    lost: list[str] = field(default_factory=list)
