"""The warm-worker settings, which every member takes (`member: {name: flux, workers: 8}`).

Their types come from `WarmMember.__init__`, as each member's come from its own; `workers` turns
warm workers on, and the others mean nothing without it, so giving one alone is an error rather
than a setting silently ignored.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from ensemble_core import bounds

#: Ranges of the warm settings.
WARM_BOUNDS = {
    "workers": bounds.Bound(1, 100_000, whole=True),
    "max_workers": bounds.Bound(1, 100_000, whole=True),
    "worker_cores": bounds.CORES,
    "worker_memory_mb": bounds.MEGABYTES,
    "worker_gpus": bounds.GPUS,
    "idle_seconds": bounds.Bound(0.1, bounds.DURATION.high),
    "port": bounds.Bound(0, 65535, whole=True),
}


def warm_fields() -> dict[str, tuple[Any, Any]]:
    """Name -> (type, default) of each warm setting, from WarmMember's signature."""
    from ensemble_core.members.warm import WarmMember

    init = WarmMember.__init__
    hints = typing.get_type_hints(init)
    return {
        name: (hints.get(name, Any), parameter.default)
        for name, parameter in inspect.signature(init).parameters.items()
        if name not in ("self", "inner")
    }


def warm_problem(values: dict[str, Any]) -> tuple[str, str] | None:
    """(setting, problem) for warm settings that do not go together, or None."""
    given = [name for name in values if name in WARM_BOUNDS or name in warm_fields()]
    workers = values.get("workers")
    if given and workers is None:
        return (
            given[0],
            "only applies with workers set (the number of warm workers): set workers too, or "
            "drop it",
        )
    max_workers = values.get("max_workers")
    if workers is not None and max_workers is not None and max_workers < workers:
        return (
            "max_workers",
            f"must be at least workers ({workers}), got {max_workers}: it is the most workers "
            "grow may reach",
        )
    return None


def split_warm(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the inner member's settings, the warm settings) of checked settings."""
    names = warm_fields()
    warm = {name: value for name, value in settings.items() if name in names}
    return {k: v for k, v in settings.items() if k not in names}, warm
