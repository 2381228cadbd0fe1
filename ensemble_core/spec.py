"""JobSpec: the canonical job every front door produces and every member consumes."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class JobSpec(BaseModel):
    """What a user sets on a job, independent of any queue.

    Field names follow what users write (Snakemake resources, Flux submit flags). Flux jobspec v1 is
    the lingua franca: `ensemble_core.translate.flux` converts both ways without loss.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    command: list[str] = Field(min_length=1, description="argv of the job's tasks")
    group: str = Field("default", description="label metrics and rules are kept under")
    name: str | None = Field(None, description="a human name for the job (Snakemake's rule, ...)")
    nodes: int | None = Field(None, ge=1, description="nodes, or None to let the queue choose")
    tasks: int = Field(1, ge=1)
    cores_per_task: int = Field(1, ge=1)
    gpus_per_task: int = Field(0, ge=0)
    exclusive: bool = False
    memory_mb: int | None = Field(None, ge=1, description="memory limit of the whole job")
    disk_mb: int | None = Field(None, ge=1)
    walltime: float | None = Field(None, gt=0, description="seconds; None is unlimited")
    environment: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="free attributes, carried as Flux user attributes"
    )
    attempt: int = Field(1, ge=1, description="1 for the first submission, +1 per resubmission")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        """Accept a shell-like string as ensemble-python files write it."""
        if isinstance(value, str):
            import shlex

            return shlex.split(value)
        return value

    @property
    def total_cores(self) -> int:
        return self.tasks * self.cores_per_task

    @property
    def total_gpus(self) -> int:
        return self.tasks * self.gpus_per_task

    def scaled(self, changes: dict[str, str | int | float]) -> JobSpec:
        """A copy with resources changed as a rule says: "x2" multiplies, "+512" adds, 4096 sets."""
        update: dict[str, Any] = {}
        for field, change in changes.items():
            current = getattr(self, field)
            update[field] = apply_change(current, change, field)
        return self.model_validate({**self.model_dump(), **update})


def apply_change(current: float | int | None, change: str | int | float, field: str) -> float | int:
    """Apply one resource change; integers stay integers (rounded up, never down)."""
    if isinstance(change, (int, float)):
        new: float = change
    else:
        text = change.strip()
        if current is None:
            raise ValueError(
                f"cannot apply '{change}' to {field}: the job sets none; give an absolute value"
            )
        if text[0] in "x*":
            new = current * float(text[1:])
        elif text[0] == "+":
            new = current + float(text[1:])
        else:
            new = float(text)
    if field == "walltime":
        return float(new)
    return math.ceil(new)
