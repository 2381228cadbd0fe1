"""Reading a run's state journal from outside its controller, without writing to it.

The journal is SQLite in WAL mode, so a reader sees a consistent state while the controller
writes. The connection is opened read-only: `ensemble status` and `ensemble report` must never
change the run they look at (and may read a directory whose controller is running).
"""

from __future__ import annotations

import json
import pickle
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_core.errors import ConfigError
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.metrics import Metrics

DATABASE = "state.db"
_ATTEMPT_COLUMNS = "spec, phase, submit_time, start_time, end_time, status, exception"


@dataclass(slots=True)
class AttemptRow:
    """One attempt of a logical job: its times (seconds since the epoch) and how it ended."""

    number: int
    submit_time: float | None
    start_time: float | None
    end_time: float | None
    #: The attempt's outcome once it ended; None while it is open.
    outcome: str | None


@dataclass(slots=True)
class JobRow:
    """One logical job as recorded: its group, its attempts and (once final) its outcome."""

    key: int
    group: str
    identity: str | None
    outcome: str | None
    reason: str | None
    attempts: list[AttemptRow] = field(default_factory=list)


class RecordedRun:
    """The journal of one state directory, read-only. Use as a context manager."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        database = self.directory / DATABASE
        if not database.is_file():
            raise ConfigError(
                f"{directory}: no ensemble state here; give the state directory of a run "
                "(`.ensemble-state/<file name>` beside its file, or its --state DIR)"
            )
        self._db = _open_read_only(database)
        self._groups: dict[int, str] = {}
        self.meta: dict[str, Any] = {
            key: pickle.loads(value) for key, value in self._db.execute("SELECT * FROM meta")
        }

    def __enter__(self) -> RecordedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # The run as a whole -----------------------------------------------------------------------

    @property
    def command(self) -> dict[str, Any]:
        """How the run was started (file, rules, member, settings); empty if not recorded."""
        return self.meta.get("command") or {}

    @property
    def ended(self) -> str | None:
        """How the run ended (completed, terminated, limit, error, interrupted); None if not."""
        return self.meta.get("ended")

    @property
    def started_at(self) -> float | None:
        return self.meta.get("started_at")

    def metrics(self) -> Metrics:
        """The metric aggregates as last written (counts and river statistics per group)."""
        metrics = Metrics()
        metrics.groups.update(self.meta.get("metrics") or {})
        return metrics

    # Rows -------------------------------------------------------------------------------------

    def actions(self, last: int | None = None) -> list[dict[str, Any]]:
        """Every recorded rule firing and operator action in order (or the `last` ones), in the
        shape the controller's snapshot gives them."""
        columns = "time, rule, action, trigger, grp, job, detail"
        if last is None:
            rows = self._db.execute(f"SELECT {columns} FROM actions ORDER BY id")
        else:
            rows = self._db.execute(
                f"SELECT {columns} FROM (SELECT * FROM actions ORDER BY id DESC LIMIT ?) "
                "ORDER BY id",
                (last,),
            )
        entries = []
        for time, rule, action, trigger, group, job, detail in rows:
            entry = {"rule": rule, "action": action, "trigger": trigger, "time": time}
            if group:
                entry["group"] = group
            if job is not None:
                entry["job"] = job
            entry["detail"] = detail
            entries.append(entry)
        return entries

    def action_counts(self) -> list[dict[str, Any]]:
        """How often each rule's action was recorded, in rule order, with its trigger."""
        return [
            {"rule": rule, "action": action, "trigger": trigger, "count": count}
            for rule, action, trigger, count in self._db.execute(
                "SELECT rule, action, min(trigger), count(*) FROM actions "
                "GROUP BY rule, action ORDER BY rule, action"
            )
        ]

    def outcomes(self) -> dict[str, int]:
        """How many logical jobs ended with each outcome (`open`: not ended)."""
        return {
            outcome or "open": count
            for outcome, count in self._db.execute(
                "SELECT outcome, count(*) FROM jobs GROUP BY outcome ORDER BY outcome"
            )
        }

    def oldest_pending_since(self) -> float | None:
        """When the longest-waiting open attempt was submitted (seconds since the epoch)."""
        (since,) = self._db.execute(
            "SELECT min(submit_time) FROM jobs WHERE outcome IS NULL AND phase = 1"
        ).fetchone()
        return since

    def job_count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM jobs").fetchone()
        return count

    def jobs(self, limit: int | None = None) -> Iterator[JobRow]:
        """The logical jobs in key order (the first `limit`), each with all its attempts."""
        query = (
            f"SELECT key, identity, outcome, reason, attempts, {_ATTEMPT_COLUMNS} FROM jobs "
            "ORDER BY key"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        earlier = self._earlier_attempts(limit)
        for key, identity, outcome, reason, count, *latest in self._db.execute(query).fetchall():
            attempts = [_attempt_row(number, *row) for number, row in earlier.get(key, [])]
            attempts = attempts[: count - 1]
            attempts.append(_attempt_row(count, *latest, final=outcome))
            group = self._group(latest[0])
            yield JobRow(key, group, identity, outcome, reason, attempts)

    # Internals --------------------------------------------------------------------------------

    def _earlier_attempts(self, limit: int | None) -> dict[int, list[tuple[int, tuple[Any, ...]]]]:
        query = f"SELECT job, number, {_ATTEMPT_COLUMNS} FROM earlier_attempts"
        if limit is not None:
            query += f" WHERE job IN (SELECT key FROM jobs ORDER BY key LIMIT {int(limit)})"
        earlier: dict[int, list[tuple[int, tuple[Any, ...]]]] = {}
        for job, number, *row in self._db.execute(query + " ORDER BY job, number"):
            earlier.setdefault(job, []).append((number, tuple(row)))
        return earlier

    def _group(self, spec_id: int) -> str:
        group = self._groups.get(spec_id)
        if group is None:
            row = self._db.execute("SELECT json FROM specs WHERE id = ?", (spec_id,)).fetchone()
            group = self._groups[spec_id] = json.loads(row[0]).get("group", "") if row else ""
        return group


def _attempt_row(
    number: int,
    spec: int,
    phase: int,
    submit_time: float | None,
    start_time: float | None,
    end_time: float | None,
    status: int | None,
    exception: str | None,
    *,
    final: str | None = None,
) -> AttemptRow:
    """An attempt as recorded; an earlier attempt's outcome is what its events told, the latest
    one's is the job's (which also covers attempts the controller ended itself)."""
    outcome = final
    if outcome is None and phase == 3:
        failure = None if exception is None else json.loads(exception)
        outcome = AttemptRecord(submit_time, start_time, end_time, status, failure).outcome.value
    return AttemptRow(number, submit_time, start_time, end_time, outcome)


def _open_read_only(database: Path) -> sqlite3.Connection:
    """A read-only connection; `immutable` where the directory cannot even hold SQLite's shared
    memory file (a state directory copied somewhere read-only: nothing writes it there)."""
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        db.execute("SELECT count(*) FROM meta").fetchone()
    except sqlite3.OperationalError:
        db = sqlite3.connect(f"{uri}&immutable=1", uri=True, check_same_thread=False)
    return db


#: Outcome names in the order tables and charts show them.
OUTCOMES = tuple(outcome.value for outcome in Outcome)
