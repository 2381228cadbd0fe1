"""The end-of-run summary, as text for a terminal (the live display is progress.py)."""

from __future__ import annotations

from typing import Any

COLUMNS = ("submitted", "running", "success", "failed", "cancelled", "resubmitted")
EXTRA = ("oom", "timeout", "unsatisfiable", "node-failure")


def summary_table(snapshot: dict[str, Any]) -> str:
    """Each group's counts and the mean/min/max of its duration and pending time (and, with
    several members, each member's), then the actions."""
    groups = snapshot["groups"]
    if not groups:
        return "no jobs ran"
    lines = _table("group", groups)
    if snapshot.get("members"):
        lines += ["", *_table("member", snapshot["members"])]
    shown = snapshot.get("actions", [])
    recorded = sum(entry["count"] for entry in snapshot.get("action_counts", []))
    if recorded > len(shown):
        per_rule = ", ".join(
            f"rule {entry['rule']} {entry['action']} {entry['count']:,}"
            for entry in snapshot["action_counts"]
        )
        lines.append(f"{recorded:,} actions ({per_rule}); the latest {len(shown):,}:")
    for action in shown:
        where = f" [{action['group']}]" if action.get("group") else ""
        lines.append(
            f"rule {action['rule']} {action['action']}{where} at {action['time']:.1f}s: "
            f"{action['detail']}"
        )
    return "\n".join(lines)


def _table(kind: str, entries: dict[str, Any]) -> list[str]:
    """The counts and times of each entry (a group or a member), as aligned lines."""
    extra = [name for name in EXTRA if any(entry.get(name) for entry in entries.values())]
    header = [kind, *COLUMNS, *extra, "duration mean/min/max s", "pending mean/max s"]
    rows = [header]
    for name, entry in entries.items():
        duration = entry.get("duration", {})
        pending = entry.get("pending_time", {})
        rows.append(
            [
                name,
                *(str(entry.get(key, 0)) for key in (*COLUMNS, *extra)),
                _stats(duration, ("mean", "min", "max")),
                _stats(pending, ("mean", "max")),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _stats(values: dict[str, float], names: tuple[str, ...]) -> str:
    if not values:
        return "-"
    return "/".join(f"{values[name]:.2f}" for name in names)
