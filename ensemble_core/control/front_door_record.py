"""A front door's run as the report reads it, kept in memory from the jobs' handles.

`ensemble run` records every run in a state journal, and `ensemble report` reads that. A front
door whose ensemble has no journal (the Snakemake plugin's `--ensemble-report`) keeps the same
facts here instead: each job's attempts as its handle resolves, and, once the ensemble is closed,
its metrics, the rules' actions and how it ended. It answers the questions `RecordedRun`
answers, so one report serves both. The controller keeps the latest `KEPT_ACTIONS` actions; a
longer run's timeline marks those, and the rules' counts cover all of them.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ensemble_core.control.recorded import AttemptRow, JobRow
from ensemble_core.metrics import Metrics

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble
    from ensemble_core.jobs import JobHandle


class FrontDoorRecord:
    """The jobs of one ensemble as they end; read it once the ensemble is closed."""

    def __init__(self, ensemble: Ensemble, name: str) -> None:
        self._ensemble = ensemble
        self._jobs: list[JobRow] = []
        self._lock = threading.Lock()
        self.command = {"file": name, "member": ensemble.member.name}
        self.directory = name

    def follow(self, handle: JobHandle) -> None:
        """Keep the job's attempts once it has its outcome."""
        handle.add_done_callback(self._ended)

    def _ended(self, handle: JobHandle) -> None:
        last = len(handle.attempts)
        attempts = [
            AttemptRow(
                number,
                attempt.record.submit_time,
                attempt.record.start_time,
                attempt.record.end_time,
                handle.outcome.value
                if number == last and handle.outcome is not None
                else (attempt.record.outcome.value if attempt.phase == 3 else None),
            )
            for number, attempt in enumerate(handle.attempts, 1)
        ]
        outcome = None if handle.outcome is None else handle.outcome.value
        row = JobRow(
            handle.key, handle.spec.group, handle.identity, outcome, handle.reason, attempts
        )
        with self._lock:
            self._jobs.append(row)

    # What the report reads (as of RecordedRun) ---------------------------------------------------

    @property
    def ended(self) -> str | None:
        return self._ensemble.exit if self._ensemble.wait(0) else None

    @property
    def started_at(self) -> float:
        return self._ensemble.started_at

    @property
    def meta(self) -> dict[str, Any]:
        return {"saved_at": time.time(), "stop_reason": self._ensemble.stop_reason}

    def metrics(self) -> Metrics:
        metrics = Metrics()
        metrics.groups.update(self._ensemble.metrics.groups)
        return metrics

    def actions(self) -> list[dict[str, Any]]:
        return self._ensemble.snapshot()["actions"]

    def action_counts(self) -> list[dict[str, Any]]:
        rules = self._ensemble.config.rules
        return [
            {**entry, "trigger": "operator" if entry["rule"] < 0 else rules[entry["rule"]].trigger}
            for entry in self._ensemble.snapshot()["action_counts"]
        ]

    def jobs(self) -> list[JobRow]:
        with self._lock:
            return sorted(self._jobs, key=lambda job: job.key)
