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
a writer thread of the journal's own runs the transactions (and the controller waits for it only
where durability comes first: before the queue acts).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pickle
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from ensemble_core.errors import ConfigError
from ensemble_core.events import AttemptRecord, Outcome
from ensemble_core.jobs import Attempt, JobHandle
from ensemble_core.spec import JobSpec

log = logging.getLogger(__name__)

#: The longest a change waits in memory before it is written.
FLUSH_SECONDS = 0.2
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
        database = self.directory / "state.db"
        if fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
        self._db = _connect(database)
        self._db.executescript(_SCHEMA)
        _upgrade(self._db)
        self.run_id = self._meta("run_id") or uuid.uuid4().hex[:12]
        #: Jobs whose row is to be written at the next flush (the controller marks it inline).
        self.dirty_jobs: dict[int, JobHandle] = {}
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
        self._meta_pending: dict[str, Any] = {}
        self._writes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._write, args=(_connect(database),), name="state-journal", daemon=True
        )
        self._writer.start()

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
        with _transaction(self._db):
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
        """The job or one of its attempts changed: write its row at the next flush."""
        self.dirty_jobs[handle.key] = handle

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
        self._actions.append(
            (
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
            self.dirty_jobs or self._meta_pending or self._actions or self._batches is not None
        )

    def flush(self, *, wait: bool = True) -> None:
        """Write everything buffered in one transaction; `wait` until it is durable."""
        if not self.dirty and not self._handed:
            return
        jobs, earlier = self._rows(self.dirty_jobs.values())
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
        writes = _Writes(
            jobs=jobs,
            earlier=earlier,
            batches=None
            if batches is None
            else [(self._spec_id(spec), left, reactive) for spec, left, reactive in batches],
            meta=[(key, _encoded(value)) for key, value in {"run_id": self.run_id, **meta}.items()],
            specs=list(self._new_specs.items()),
            actions=self._actions,
            done=threading.Event() if wait else None,
        )
        self._new_specs, self._actions = {}, []
        self._writes.put(writes)
        if writes.done is not None:
            writes.done.wait()

    def close(self) -> None:
        self.flush()
        self._writes.put(None)
        self._writer.join()
        self._db.close()
        self._lock.close()

    def _write(self, db: sqlite3.Connection) -> None:
        """The writer thread: one transaction per flush, in order."""
        failed = False
        while (writes := self._writes.get()) is not None:
            try:
                with _transaction(db):
                    writes.apply(db)
                failed = False
            except sqlite3.Error as error:  # a full disk must not stop the run: say it once
                if not failed:
                    log.error("ensemble: cannot write the state journal: %s", error)
                failed = True
            finally:
                if writes.done is not None:
                    writes.done.set()
        db.close()

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

    def _rows(
        self, handles: Iterable[JobHandle]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The jobs' rows and their earlier attempts' rows, in one pass (a flush may hold tens
        of thousands of jobs, and this runs on the controller's thread)."""
        jobs: list[tuple[Any, ...]] = []
        earlier: list[tuple[Any, ...]] = []
        attempt_row = self._attempt_row
        for handle in handles:
            attempts = handle.attempts
            outcome: Outcome | None = handle.outcome
            jobs.append(
                (
                    handle.key,
                    handle.identity,
                    handle.reactive,
                    handle.cancel_requested,
                    None if outcome is None else outcome.value,
                    None if outcome is None else handle.reason,
                    len(attempts),
                    *attempt_row(attempts[-1]),
                )
            )
            if len(attempts) > 1:
                earlier.extend(
                    (handle.key, number, *attempt_row(attempt))
                    for number, attempt in enumerate(attempts[:-1], 1)
                )
        return jobs, earlier

    def _attempt_row(self, attempt: Attempt) -> tuple[Any, ...]:
        record = attempt.record
        exception = record.exception
        repeats = None
        if attempt.repeats and self.kept_repeats:
            kept = [seen for seen in attempt.repeats if seen[0] in self.kept_repeats]
            repeats = json.dumps(kept) if kept else None
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
            repeats,
        )

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


@dataclass(slots=True)
class _Writes:
    """The rows of one flush, built on the controller's thread, written on the writer's."""

    jobs: list[tuple[Any, ...]]
    earlier: list[tuple[Any, ...]]
    batches: list[tuple[Any, ...]] | None
    meta: list[tuple[str, bytes]]
    specs: list[tuple[int, str]]
    actions: list[tuple[Any, ...]]
    done: threading.Event | None

    def apply(self, db: sqlite3.Connection) -> None:
        _insert(db, "INSERT OR IGNORE INTO specs", self.specs)
        _insert(db, "INSERT OR REPLACE INTO jobs", self.jobs)
        _insert(db, "INSERT OR REPLACE INTO earlier_attempts", self.earlier)
        if self.batches is not None:
            db.execute("DELETE FROM batches")
            _insert(db, "INSERT INTO batches (spec, left, reactive)", self.batches)
        _insert(db, "INSERT OR REPLACE INTO meta", self.meta)
        _insert(
            db, "INSERT INTO actions (time, rule, action, trigger, grp, job, detail)", self.actions
        )


def _insert(db: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert `rows` with few statements of many rows each, not one statement per row.

    Why: Python's sqlite3 lets go of the GIL around each statement's step, and the writer thread
    gets it back only when the controller's thread yields it (every 5 ms while the controller is
    busy). Row by row (`executemany`), 30,000 rows took 20 s next to a busy controller; in
    statements of up to 1,024 rows, 0.3 s. Statement sizes are powers of two, so the few shapes
    stay in the connection's statement cache."""
    if not rows:
        return
    width = len(rows[0])
    most = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    size = 1 << min(10, most.bit_length() - 1)
    row = "(" + ",".join("?" * width) + ")"
    start, count = 0, len(rows)
    while start < count:
        while size > count - start:
            size >>= 1
        chunk = rows[start : start + size]
        db.execute(f"{head} VALUES {','.join([row] * size)}", list(chain.from_iterable(chunk)))
        start += size


def _upgrade(db: sqlite3.Connection) -> None:
    """Add what a state directory written by an earlier version lacks, so its run resumes."""
    for table in ("jobs", "earlier_attempts"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "repeats" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN repeats")


def _connect(database: Path) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit (`_transaction`)."""
    db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction (outside one, every statement would be a transaction of its own, a
    hundred times slower)."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _locked(directory: Path):
    """The directory's lock file, held: one controller per state directory."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / "lock", "a+")  # noqa: SIM115 (held while the journal is open)
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
