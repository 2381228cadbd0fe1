"""Live progress of a running ensemble on a terminal, one row per job group.

Each group shows its jobs (logical jobs: a resubmission is a retry, not another job), how many
run, how many are done, failed and retried, and a bar of the jobs ended against the jobs known:
those submitted so far, or the file's `start` submissions if more. On a terminal the rows are a
rich display that log lines scroll above; elsewhere (a file, a pipe, CI) a plain line is written
when the counts changed, at most every `LINE_SECONDS`.

The display is fed from a thread of its own that reads the controller's `snapshot()`, so it works
the same for `ensemble run` and for the Snakemake plugin, whose main thread is Snakemake's.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble
    from ensemble_core.rules.schema import EnsembleFile

#: How often the display reads the controller's snapshot.
REFRESH_SECONDS = 0.5
#: The shortest time between two plain progress lines.
LINE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class GroupProgress:
    """One group's row, in logical jobs."""

    group: str
    jobs: int
    running: int
    done: int
    failed: int
    retried: int
    #: The bar's total: the jobs known so far, or the file's start submissions if more.
    total: int

    @property
    def ended(self) -> int:
        return self.done + self.failed

    def line(self) -> str:
        return (
            f"{self.group} {self.ended}/{self.total} ended ({self.done} done, {self.failed} "
            f"failed), {self.running} running, {self.retried} retried"
        )


def group_progress(snapshot: dict[str, Any], planned: dict[str, int]) -> list[GroupProgress]:
    """The rows of a controller snapshot. Counts in the snapshot are per attempt: an attempt a
    rule resubmitted ended badly and is counted as retried, not failed."""
    rows = []
    for group, entry in snapshot["groups"].items():
        retried = entry.get("resubmitted", 0)
        jobs = entry.get("submitted", 0) - retried
        failed = entry.get("failed", 0) + entry.get("cancelled", 0) - retried
        rows.append(
            GroupProgress(
                group,
                jobs,
                entry.get("running", 0),
                entry.get("success", 0),
                max(0, failed),
                retried,
                max(jobs, planned.get(group, 0)),
            )
        )
    known = {row.group for row in rows}
    rows.extend(
        GroupProgress(group, 0, 0, 0, 0, 0, count)
        for group, count in planned.items()
        if group not in known
    )
    return rows


def planned_jobs(config: EnsembleFile | None) -> dict[str, int]:
    """Jobs per group that the file's `start` rules submit: known before any job runs."""
    planned: dict[str, int] = {}
    if config is None:
        return planned
    templates = {group.name: group for group in config.jobs}
    for rule in config.rules:
        action = rule.action
        template = templates.get(action.label or "")
        if rule.trigger == "start" and action.name == "submit" and template is not None:
            count = action.value or template.count
            planned[template.name] = planned.get(template.name, 0) + count
    return planned


class Display(Protocol):
    def update(self, rows: list[GroupProgress]) -> None: ...
    def close(self) -> None: ...


class LineDisplay:
    """Plain lines, for output that is not a terminal."""

    def __init__(self, write: Callable[[str], None], interval: float | None = None) -> None:
        self._write = write
        self._interval = LINE_SECONDS if interval is None else interval
        self._last = ""
        self._written_at = time.monotonic()

    def update(self, rows: list[GroupProgress]) -> None:
        text = "; ".join(row.line() for row in rows)
        now = time.monotonic()
        if text and text != self._last and now - self._written_at >= self._interval:
            self._write(f"progress: {text}")
            self._last, self._written_at = text, now

    def close(self) -> None:
        """Nothing to clear: the lines stay."""


class LiveDisplay:
    """rich's progress bars on a terminal; what is logged meanwhile scrolls above them."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[running]} running  [green]{task.fields[done]} done[/]  "
                "[red]{task.fields[failed]} failed[/]  [yellow]{task.fields[retried]} retried"
            ),
            console=Console(file=stream),
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
        )
        self._tasks: dict[str, Any] = {}
        self._progress.start()
        self._rerouted = _route_logging_through(sys.stderr, stream)

    def update(self, rows: list[GroupProgress]) -> None:
        for row in rows:
            task = self._tasks.get(row.group)
            if task is None:
                task = self._tasks[row.group] = self._progress.add_task(
                    row.group, total=row.total, running=0, done=0, failed=0, retried=0
                )
            self._progress.update(
                task,
                total=row.total,
                completed=row.ended,
                running=row.running,
                done=row.done,
                failed=row.failed,
                retried=row.retried,
            )
        self._progress.refresh()

    def close(self) -> None:
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._progress.stop()


def _route_logging_through(proxy: Any, terminal: TextIO) -> list[tuple[logging.Handler, Any]]:
    """Point the log handlers that write to the terminal at rich's proxy of it (installed as
    sys.stderr while the display runs), so their lines scroll above the bars instead of
    through them; what was changed, to undo."""
    if proxy is terminal:
        return []
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    changed = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is terminal:
                changed.append((handler, handler.setStream(proxy)))
    return changed


class Progress:
    """Feeds a display from the controller's snapshots on a thread; `close()` stops it."""

    def __init__(
        self,
        ensemble: Ensemble,
        *,
        planned: dict[str, int] | None = None,
        write: Callable[[str], None] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        stream = stream or sys.stderr
        self._ensemble = ensemble
        self._planned = planned or {}
        self._display: Display = (
            LiveDisplay(stream)
            if stream.isatty()
            else LineDisplay(write or (lambda line: print(f"ensemble: {line}", file=stream)))
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="ensemble-progress", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        while not self._stopped.wait(REFRESH_SECONDS):
            try:
                snapshot = self._ensemble.snapshot()
            except Exception:  # the controller was busy or is closing: try the next round
                continue
            self._display.update(group_progress(snapshot, self._planned))

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._display.close()
