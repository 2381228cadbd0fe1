"""What `ensemble status` shows, as one object: from a running controller or from its journal.

Both sources give the same shape, so `--json` readers and the text view need not care which one
answered: the groups' counts and statistics, the queue gauges, the member, the latest rule
firings and how often each rule fired. `controller` says whether a controller is following the
run now (`running`), the run has ended (`ended`), or the journal was left by a controller that
was killed or detached (`not running`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble

#: Rule firings a status shows by default (the latest).
RECENT_ACTIONS = 10


def live_status(
    ensemble: Ensemble, origin: dict[str, str | None], recent: int = RECENT_ACTIONS
) -> dict[str, Any]:
    """The status of a running ensemble, through the controller's thread-safe API only;
    `origin` names its `state` directory and ensemble `file` (either may be None)."""
    snapshot = ensemble.snapshot()
    groups = snapshot["groups"]
    return {
        "state": origin.get("state"),
        "file": origin.get("file"),
        "controller": "running",
        "exit": None,
        "reason": ensemble.stop_reason or None,
        "started_at": ensemble.started_at,
        "elapsed_seconds": round(time.time() - ensemble.started_at, 3),
        "member": ensemble.member.describe(),
        "queue": _queue(groups, _oldest_pending(ensemble)),
        "groups": groups,
        "members": snapshot.get("members", {}),
        "recent_actions": snapshot["actions"][-recent:] if recent else [],
        "action_counts": snapshot["action_counts"],
    }


def recorded_status(directory: str | Path, recent: int = RECENT_ACTIONS) -> dict[str, Any]:
    """The status as the journal last recorded it (a run that ended, or lost its controller)."""
    from ensemble_core.control.recorded import RecordedRun  # not needed by a running controller

    with RecordedRun(directory) as run:
        command = run.command
        groups = run.metrics().summary()
        started = run.started_at
        saved = run.meta.get("saved_at", started)
        since = run.oldest_pending_since() if run.ended is None else None
        counts = {(e["rule"], e["action"]): e["count"] for e in run.action_counts()}
        return {
            "state": str(Path(directory)),
            "file": command.get("file"),
            "controller": "ended" if run.ended else "not running",
            "exit": run.ended,
            "reason": run.meta.get("stop_reason") or None,
            "started_at": started,
            "elapsed_seconds": None if started is None else round(saved - started, 3),
            "member": {"member": command.get("member"), **command.get("settings", {})},
            "queue": _queue(groups, None if since is None else time.time() - since),
            "groups": groups,
            "recent_actions": run.actions(recent) if recent else [],
            "action_counts": [
                {"rule": rule, "action": action, "count": count}
                for (rule, action), count in counts.items()
            ],
            "jobs": run.outcomes(),
        }


def _queue(groups: dict[str, dict[str, Any]], oldest_pending: float | None) -> dict[str, Any]:
    """The queue gauges (docs/rules.md: queue.pending, queue.running, queue.oldest-pending)."""
    return {
        "pending": sum(entry.get("pending", 0) for entry in groups.values()),
        "running": sum(entry.get("running", 0) for entry in groups.values()),
        "oldest_pending_seconds": None if oldest_pending is None else round(oldest_pending, 3),
    }


def _oldest_pending(ensemble: Ensemble) -> float | None:
    """`queue.oldest-pending`, read from outside the loop: the controller's table may change
    while it is read, and then the reading is simply taken again."""
    for _ in range(3):
        try:
            return ensemble.metrics.value("queue.oldest-pending")
        except RuntimeError:
            continue
    return None


def status_text(status: dict[str, Any]) -> str:
    """The status for a terminal: a header, the groups' table, the gauges, the latest firings."""
    from ensemble_core.report import summary_table

    where = status.get("file") or status.get("state") or "ensemble"
    elapsed = status.get("elapsed_seconds")
    ran = "" if elapsed is None else f" for {elapsed:.1f} s"
    if status["controller"] == "running":
        header = f"{where}: running{ran}"
    elif status["controller"] == "ended":
        reason = f" ({status['reason']})" if status.get("reason") else ""
        header = f"{where}: ended {status['exit']}{reason} after {elapsed or 0:.1f} s"
    else:
        header = (
            f"{where}: no controller is following this run (killed or detached) - as last "
            f"recorded{ran}; `ensemble attach {status['state']}` follows it again"
        )
    member = status.get("member") or {}
    settings = ", ".join(f"{k} {v}" for k, v in member.items() if k != "member" and v is not None)
    queue = status["queue"]
    oldest = queue.get("oldest_pending_seconds")
    gauges = f"queue: {queue['pending']} pending, {queue['running']} running" + (
        f", oldest pending {oldest:.1f} s" if oldest else ""
    )
    lines = [
        header,
        f"member {member.get('member')}" + (f": {settings}" if settings else ""),
        gauges,
        "",
        summary_table(
            {
                "groups": status["groups"],
                "actions": status["recent_actions"],
                "action_counts": status["action_counts"],
            }
        ),
    ]
    return "\n".join(lines)
