"""The state journal: what a controller must not forget, so a killed one can be resumed.

SQLite in WAL mode: one file, crash-safe transactions, readers (`ensemble status`, a report)
while the controller writes, and it is in the standard library. A directory holds the database
(`state.db`) and a lock file: one controller at a time. (The metric aggregates are river's
objects, stored pickled: a state directory is as trusted as the ensemble file it belongs to.)

What is kept:

- each logical job, one row: its key, identity (a front door's name for it), whether a reacting
  rule submitted it, whether a cancel was asked for, its outcome and reason once final, and its
  latest attempt: JobSpec (stored once per distinct spec), token, member id, phase, the events
  already counted (`seen`) and the times and status they told. Earlier attempts of a resubmitted
  job have rows of their own;
- the jobs of `submit` actions not yet handed to the member (batches), and those handed to it
  whose row is not written yet (their key and spec: a resumed controller looks for them by
  token);
- the controller's counters, the rule engine's state and the metric aggregates, written in the
  same transaction as the rows, so they always agree.

When it is written: changes are buffered and written in one transaction before anything that
changes the queue (the intent to submit a slice of jobs is durable before the member sees them;
the same before a grow, shrink or cancel) and at most `FLUSH_SECONDS` later otherwise. A job
whose life fits between two writes is written once. A crash loses at most the events since the
last write, and a resumed controller gets those again: the member's `adopt` replays each job's
events and `seen` says which were counted already. The controller's thread only builds the rows;
a writer process of the journal's own runs the transactions (`state_writer`), and the controller
waits for it only where durability comes first: before the queue acts. A directory has a second
lock, the writer's: a controller that died leaves its writer finishing what it was given, and
the next controller waits for that before it reads.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ensemble_core.errors import ConfigError
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.spec import JobSpec
from ensemble_core.state_handoff import WriterHandoff
from ensemble_core.state_writer import connect, transaction

log = logging.getLogger(__name__)

#: The longest a change waits in memory before it is written.
FLUSH_SECONDS = 0.2
#: How often the controller asks whether a flush is due (`StateJournal.due`).
CHECK_SECONDS = 0.05
#: A busy run is written in slices of about this many jobs, sooner than `FLUSH_SECONDS`: the
#: writer then works beside the controller instead of all at once where the controller waits
#: for it (before the queue acts, and at the end).
FLUSH_JOBS = 2048
#: An outcome as the journal writes it (plain text: the writer's input is marshalled).
_OUTCOME_TEXT = {outcome: outcome.value for outcome in Outcome}
#: Specs remembered by identity (a submit action's jobs share one): each is written once.
_SPEC_CACHE = 1024

_ATTEMPT_COLUMNS = (
    "spec, token, member_id, phase, seen, submit_time, start_time, end_time, status, exception, "
    "repeats"
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS specs (id INTEGER PRIMARY KEY, json TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key INTEGER PRIMARY KEY, identity TEXT, reactive INTEGER, cancel_requested INTEGER,
    outcome TEXT, reason TEXT, attempts INTEGER, {_ATTEMPT_COLUMNS}
);
CREATE TABLE IF NOT EXISTS earlier_attempts (
    job INTEGER, number INTEGER, {_ATTEMPT_COLUMNS}, PRIMARY KEY (job, number)
);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, spec INTEGER, left INTEGER,
    reactive INTEGER);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY, time REAL, rule INTEGER, action TEXT, trigger TEXT, grp TEXT,
    job INTEGER, detail TEXT
);
"""


@dataclass
class SavedJob:
    """An open logical job as the journal had it."""

    key: int
    identity: str | None
    reactive: bool
    cancel_requested: bool
    attempts: list[Attempt]


@dataclass
class SavedRun:
    """What a resumed controller starts from."""

    meta: dict[str, Any]
    jobs: list[SavedJob] = field(default_factory=list)
    #: (spec, jobs left, reactive) of each batch not yet handed to the member.
    batches: list[tuple[JobSpec, int, bool]] = field(default_factory=list)


class StateJournal:
    """The journal of one state directory; written from the controller's loop thread only."""

    def __init__(
        self, directory: str | Path, *, fresh: bool = False, command: dict[str, Any] | None = None
    ) -> None:
        self.directory = Path(directory)
        #: How this run was started (file, rules, member...), kept for `ensemble attach`.
        self.command = command
        self._lock = _locked(self.directory)
        # The writer of a controller that died may still be writing what it was given: wait.
        # Held from now on by this controller, and by its writer once it has one.
        self._writer_lock = _open_lock(self.directory / "writer.lock")
        fcntl.flock(self._writer_lock, fcntl.LOCK_EX)
        self._database = self.directory / "state.db"
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._database}{suffix}").unlink(missing_ok=True)
        self._db = connect(self._database)
        self._db.executescript(_SCHEMA)
        _upgrade(self._db)
        self.handoff = WriterHandoff(self._db, self._database, self._writer_lock)
        self.run_id = self._meta("run_id") or uuid.uuid4().hex[:12]
        #: Open jobs whose row is to be written at the next flush (the controller marks it
        #: inline).
        self.dirty_jobs: dict[int, JobHandle] = {}
        #: The rows (and earlier attempts' rows) of the jobs that ended since the last flush:
        #: built at the end, while the job is fresh in memory, so the job itself can go then.
        self._ended: list[tuple[Any, ...]] = []
        self._ended_earlier: list[tuple[Any, ...]] = []
        #: The names of the repeatable events (exception, priority...) whose occurrences are
        #: kept with an attempt: those a rule reacts to, set by the controller. Others, counted
        #: again after a restart, change nothing.
        self.kept_repeats: frozenset[str] = frozenset()
        #: Jobs of batches handed to the member whose row is not written yet: key -> job.
        self._handed: dict[int, JobHandle] = {}
        self._specs: dict[int, tuple[JobSpec, int]] = {}
        #: Specs met since the last flush, to be written with it: id -> JSON.
        self._new_specs: dict[int, str] = {}
        self._batches: list[tuple[JobSpec, int, bool]] | None = None
        self._actions: list[tuple[Any, ...]] = []
        (self._last_action,) = self._db.execute(
            "SELECT coalesce(max(id), 0) FROM actions"
        ).fetchone()
        self._meta_pending: dict[str, Any] = {}
        self._flush_by = 0.0

    # What a controller starts from ------------------------------------------------------------

    def previous(self) -> SavedRun | None:
        """The run recorded here, if one was recorded and did not end; None for a fresh start."""
        meta = {key: _decoded(value) for key, value in self._db.execute("SELECT * FROM meta")}
        if "run_id" not in meta or meta.get("ended"):
            return None
        specs: dict[int, JobSpec] = {}
        saved = SavedRun(meta)
        rows = self._db.execute(
            "SELECT key, identity, reactive, cancel_requested, attempts, "
            f"{_ATTEMPT_COLUMNS} FROM jobs WHERE outcome IS NULL ORDER BY key"
        ).fetchall()
        for key, identity, reactive, cancel_requested, count, *last in rows:
            earlier = self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM earlier_attempts WHERE job = ? ORDER BY number",
                (key,),
            ).fetchall()
            attempts = [
                _attempt(self._spec(row[0], specs), *row[1:]) for row in earlier[: count - 1]
            ]
            attempts.append(_attempt(self._spec(last[0], specs), *last[1:]))
            saved.jobs.append(
                SavedJob(key, identity, bool(reactive), bool(cancel_requested), attempts)
            )
        written = {job.key for job in saved.jobs}
        for key, spec_id, reactive, token in meta.get("handed", []):
            if key not in written and not self._has_row(key):
                attempt = Attempt(self._spec(spec_id, specs), token=token)
                saved.jobs.append(SavedJob(key, None, bool(reactive), False, [attempt]))
        saved.jobs.sort(key=lambda job: job.key)
        saved.batches = [
            (self._spec(spec, specs), left, bool(reactive))
            for spec, left, reactive in self._db.execute(
                "SELECT spec, left, reactive FROM batches WHERE left > 0 ORDER BY id"
            )
        ]
        return saved

    def recorded_command(self) -> dict[str, Any] | None:
        """How the unfinished run recorded here was started; None if none is unfinished."""
        if self._meta("run_id") is None or self._meta("ended"):
            return None
        return self._meta("command") or {}

    def forget_previous(self) -> None:
        """Start anew in this directory (the run recorded here ended, or --fresh)."""
        with transaction(self._db):
            for table in ("meta", "jobs", "earlier_attempts", "batches", "specs", "actions"):
                self._db.execute(f"DELETE FROM {table}")
        self.run_id = uuid.uuid4().hex[:12]
        self._specs.clear()
        if self.command is not None:
            self._meta_pending["command"] = self.command

    # Writing ----------------------------------------------------------------------------------

    def token(self, key: int, attempt: int) -> str:
        """The token of a submission: unique across controllers and runs."""
        return f"{self.run_id}.{key}.{attempt}"

    def changed(self, handle: JobHandle) -> None:
        """The job or one of its attempts changed: write its row at the next flush. An ended
        job's row is final: it is built now, and the job is not held until the flush (in a
        flush of thousands, building the rows of jobs long gone from the processor's caches,
        and then freeing them, cost more than the rows themselves)."""
        key = handle.key
        if handle.outcome is None:
            self.dirty_jobs[key] = handle
            return
        self.dirty_jobs.pop(key, None)
        if self._handed:
            self._handed.pop(key, None)
        self._ended.append(self._job_row(handle, self._ended_earlier))

    def handed(self, handle: JobHandle) -> None:
        """A job of a batch is being handed to the member: its key and spec are written at the
        next flush; its row once it has one to write (saves writing each such job twice)."""
        self._handed[handle.key] = handle

    def submitting(self, handle: JobHandle) -> None:
        """The job's latest attempt is about to reach the member: durable at the next flush."""
        if handle.key not in self._handed:
            self.dirty_jobs[handle.key] = handle

    def action(self, entry: dict[str, Any]) -> None:
        """What a rule (or an operator) did: every entry is kept, for status and the report."""
        self._last_action += 1  # numbered here: a flush written twice writes it once
        self._actions.append(
            (
                self._last_action,
                entry["time"],
                entry["rule"],
                entry["action"],
                entry["trigger"],
                entry.get("group"),
                entry.get("job"),
                entry["detail"],
            )
        )

    def set_batches(self, batches: Iterable[tuple[JobSpec, int, bool]]) -> None:
        self._batches = list(batches)

    def set_meta(self, **values: Any) -> None:
        self._meta_pending.update(values)

    @property
    def dirty(self) -> bool:
        return bool(
            self.dirty_jobs
            or self._ended
            or self._meta_pending
            or self._actions
            or self._batches is not None
        )

    def due(self) -> bool:
        """Whether the periodic flush is to write now: a change has waited `FLUSH_SECONDS`, or
        `FLUSH_JOBS` jobs are waiting."""
        if len(self.dirty_jobs) + len(self._ended) >= FLUSH_JOBS:
            return True
        return time.monotonic() >= self._flush_by and self.dirty

    def flush(self, *, wait: bool = True) -> int:
        """Write everything buffered in one transaction; `wait` until it is durable. Its ticket
        for `durable` (0: nothing to wait for)."""
        self._flush_by = time.monotonic() + FLUSH_SECONDS
        if self.dirty or self._handed:
            ticket = self.handoff.send(*self._take_statements())
        else:
            ticket = self.handoff.last_ticket  # what was handed over before, if anything
        if wait:
            self.handoff.wait(ticket)
        return ticket

    def _take_statements(self) -> tuple[list[tuple[str, Any]], int]:
        """What is buffered, as the statements of one transaction (the buffers emptied), and
        how many jobs they write."""
        jobs, self._ended = self._ended, []
        earlier, self._ended_earlier = self._ended_earlier, []
        job_row = self._job_row
        jobs.extend([job_row(handle, earlier) for handle in self.dirty_jobs.values()])
        handed = self._handed
        if handed:
            for key in self.dirty_jobs:
                handed.pop(key, None)
        self.dirty_jobs.clear()  # in place: the controller holds this very map
        meta, self._meta_pending = self._meta_pending, {}
        meta["handed"] = [
            (h.key, self._spec_id(h.spec), h.reactive, h.attempts[-1].token)
            for h in handed.values()
        ]
        batches, self._batches = self._batches, None
        statements: list[tuple[str, Any]] = [
            ("INSERT OR IGNORE INTO specs", list(self._new_specs.items())),
            ("INSERT OR REPLACE INTO jobs", jobs),
            ("INSERT OR REPLACE INTO earlier_attempts", earlier),
        ]
        if batches is not None:
            statements.append(("DELETE FROM batches", None))
            statements.append(
                (
                    "INSERT INTO batches (spec, left, reactive)",
                    [(self._spec_id(spec), left, reactive) for spec, left, reactive in batches],
                )
            )
        meta = {"run_id": self.run_id, **meta}
        statements.append(
            ("INSERT OR REPLACE INTO meta", [(key, _encoded(value)) for key, value in meta.items()])
        )
        statements.append(
            (
                "INSERT OR REPLACE INTO actions "
                "(id, time, rule, action, trigger, grp, job, detail)",
                self._actions,
            )
        )
        self._new_specs, self._actions = {}, []
        return statements, len(jobs)

    async def durable(self, ticket: int) -> None:
        """Wait, letting the loop go on, until the flush `ticket` is written."""
        await self.handoff.durable(ticket)

    def close(self) -> None:
        self.flush()
        self.handoff.close()
        self._db.close()
        self._writer_lock.close()
        self._lock.close()

    # Reading ----------------------------------------------------------------------------------

    def outcomes(self) -> dict[str, int]:
        """How many jobs ended with each outcome (and `open`: not ended)."""
        return {
            outcome or "open": count
            for outcome, count in self._db.execute(
                "SELECT outcome, count(*) FROM jobs GROUP BY outcome"
            )
        }

    # Internals --------------------------------------------------------------------------------

    def _job_row(self, handle: JobHandle, earlier: list[tuple[Any, ...]]) -> tuple[Any, ...]:
        """The job's row; its earlier attempts' rows go to `earlier` (under a µs a job: a run
        ends tens of thousands a second, on the controller's thread)."""
        attempts = handle.attempts
        outcome = handle.outcome
        key = handle.key
        # Tuples are joined, not unpacked into a new one: half the time, on every job's end.
        if len(attempts) > 1:
            earlier.extend(
                (key, number) + self._attempt_columns(attempt)  # noqa: RUF005
                for number, attempt in enumerate(attempts[:-1], 1)
            )
        head = (
            key,
            handle.identity,
            handle.reactive,
            handle.cancel_requested,
            None if outcome is None else _OUTCOME_TEXT[outcome],
            None if outcome is None else handle.reason,
            len(attempts),
        )
        return head + self._attempt_columns(attempts[-1])

    def _attempt_columns(self, attempt: Attempt) -> tuple[Any, ...]:
        """An attempt's columns, as its job's row and an earlier attempt's row end."""
        record = attempt.record
        exception = record.exception
        return (
            self._spec_id(attempt.spec),
            attempt.token,
            attempt.member_id,
            attempt.phase,
            attempt.seen,
            record.submit_time,
            record.start_time,
            record.end_time,
            record.status,
            None if exception is None else json.dumps(exception),
            self._repeats(attempt) if attempt.repeats and self.kept_repeats else None,
        )

    def _repeats(self, attempt: Attempt) -> str | None:
        """The repeatable events a rule reacts to, of those the attempt had."""
        kept = [seen for seen in attempt.repeats if seen[0] in self.kept_repeats]
        return json.dumps(kept) if kept else None

    def _has_row(self, key: int) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE key = ?", (key,)).fetchone() is not None

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decoded(row[0])

    def _spec_id(self, spec: JobSpec) -> int:
        """A spec's id: a hash of its JSON, so no lookup is needed (written once per flush)."""
        cached = self._specs.get(id(spec))
        if cached is not None and cached[0] is spec:
            return cached[1]
        text = spec.model_dump_json()
        spec_id = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest()) >> 1
        self._new_specs[spec_id] = text
        if len(self._specs) >= _SPEC_CACHE:
            self._specs.clear()
        self._specs[id(spec)] = (spec, spec_id)
        return spec_id

    def _spec(self, spec_id: int, specs: dict[int, JobSpec]) -> JobSpec:
        spec = specs.get(spec_id)
        if spec is None:
            (text,) = self._db.execute("SELECT json FROM specs WHERE id = ?", (spec_id,)).fetchone()
            spec = specs[spec_id] = JobSpec.model_validate_json(text)
            self._specs[id(spec)] = (spec, spec_id)
        return spec


def _upgrade(db: sqlite3.Connection) -> None:
    """Add what a state directory written by an earlier version lacks, so its run resumes."""
    for table in ("jobs", "earlier_attempts"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "repeats" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN repeats")


def _locked(directory: Path):
    """The directory's lock file, held: one controller per state directory."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = _open_lock(directory / "lock")
    except OSError as error:
        raise ConfigError(
            f"{directory}: cannot use it as a state directory ({error.strerror}); "
            "give another with --state"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigError(
            f"{directory}: another controller ({holder}) is using this state; "
            "wait for it to end, or give another directory with --state"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def _open_lock(path: Path) -> IO[str]:
    """A lock file, open for `flock` (held for as long as the file stays open)."""
    return open(path, "a+")


def _attempt(
    spec: JobSpec,
    token: str | None,
    member_id: Any,
    phase: int,
    seen: int,
    submit_time: float | None,
    start_time: float | None,
    end_time: float | None,
    status: int | None,
    exception: str | None,
    repeats: str | None,
) -> Attempt:
    failure = None if exception is None else json.loads(exception)
    record = AttemptRecord(submit_time, start_time, end_time, status, failure)
    counted = () if repeats is None else tuple((name, at) for name, at in json.loads(repeats))
    return Attempt(spec, member_id, record, phase, seen, token, counted)


def _encoded(value: Any) -> bytes:
    return pickle.dumps(value)


def _decoded(value: bytes) -> Any:
    return pickle.loads(value)
