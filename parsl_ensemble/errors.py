"""The exception a Future gets when the job around a task ended without the task's own result."""

from __future__ import annotations

from parsl.app.errors import AppException


class EnsembleTaskError(AppException):
    """A task's job ended as oom, timeout, cancelled, unsatisfiable, ... or left no result.

    `outcome` is the ensemble outcome (`ensemble_core.events.Outcome` value), `reason` the
    member's sentence, `log_paths` the job's output files, `attempts` how many jobs ran it.
    """

    def __init__(
        self, task: str, outcome: str, reason: str, log_paths: list[str], attempts: int
    ) -> None:
        super().__init__(task, outcome, reason, log_paths, attempts)
        self.task, self.outcome, self.reason = task, outcome, reason
        self.log_paths, self.attempts = log_paths, attempts

    def __str__(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        logs = f"; job output: {', '.join(self.log_paths)}" if self.log_paths else ""
        reason = self.reason  # the core's reasons mostly begin with the outcome already
        ended = "" if reason.startswith(self.outcome) else f" ended as {self.outcome}"
        return f"{self.task}{ended}{tries}: {reason}{logs}"
