"""The ranges every number a user hands in must fall in, in one place (docs/rules.md lists them).

Each bound is far beyond any real use and far below what would exhaust memory, overflow a float
or hang the run: a file or setting that validates cannot crash the ensemble by its size.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Bound:
    """An inclusive range with the words every front door uses when a value falls outside."""

    low: float
    high: float
    whole: bool = False

    def problem(self, value: object) -> str | None:
        """Why `value` is out of range, or None if it is fine."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a whole number" if self.whole else "a number"
            return f"must be {kind} (got {value!r})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number (got {value!r})"
        if self.whole and isinstance(value, float) and not value.is_integer():
            return f"must be a whole number (got {value!r})"
        if value < self.low:
            return f"must be at least {self.low:g} (got {shown(value)})"
        if value > self.high:
            return f"must be at most {self.high:g} (got {shown(value)})"
        return None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxother = 60, 40


def shown(value: object) -> str:
    """A value for a message: one short line even for a huge or deeply nested input."""
    text = _SHORT.repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def as_float(value: int | float) -> float:
    """A float, infinite for an int too large for one (YAML ints have no size limit)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


#: Jobs one `submit` starts (a job group's `count`, a submit's `value`). The controller makes
#: a job's handle only when it hands the job to the member, so a large count costs no memory.
JOBS_PER_SUBMIT = Bound(0, 10_000_000, whole=True)
#: A submit action's `value` (a count of jobs given by the rule: at least one).
SUBMIT_VALUE = Bound(1, JOBS_PER_SUBMIT.high, whole=True)
#: Nodes of a job, and nodes a grow or shrink adds or removes.
NODES = Bound(1, 100_000, whole=True)
#: Tasks of a job.
TASKS = Bound(1, 1_000_000, whole=True)
#: Cores per task, and cores per node of a member.
CORES = Bound(1, 100_000, whole=True)
#: GPUs per task, and per node of a member.
GPUS = Bound(0, 10_000, whole=True)
#: Memory and disk in MB (a job's, a node's): up to an exabyte.
MEGABYTES = Bound(1, 1e12, whole=True)
#: A job's walltime in seconds (0: unlimited), a cooldown.
DURATION = Bound(0, 366 * DAY)
#: How often an interval rule fires or a heartbeat beats: at most 100 times a second.
PERIOD = Bound(0.01, 366 * DAY)
#: `repetitions` of an action (per rule), `backoff`.
REPETITIONS = Bound(1, 1_000_000, whole=True)
BACKOFF = Bound(0, 1_000_000, whole=True)
#: `repetitions` of a resubmit: per job; with FACTOR it keeps every size finite.
RESUBMITS = Bound(1, 100, whole=True)
#: The factor of a resource change "xF", and the amount of "+N".
FACTOR = Bound(0.001, 100)
#: `limits.max_actions` and `limits.max_jobs`.
LIMIT = Bound(1, 10_000_000, whole=True)
#: A `when:` threshold.
THRESHOLD = Bound(-1e15, 1e15)
