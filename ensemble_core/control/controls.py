"""What an operator may ask of a running ensemble, whatever the transport.

The Unix socket and the gRPC service both hand their requests here: a status, or one of the
actions `grow`, `shrink`, `submit`, `cancel`, `terminate`. A request is checked before it reaches
the controller (a group that does not exist, a value that is not a count) so that a mistake gets
an error that says what to give instead, rather than an action recorded as having done nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble_core.control.status import live_status
from ensemble_core.errors import ConfigError, EnsembleError

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble

#: The actions an operator may ask for, and what each needs.
OPERATOR_ACTIONS = {
    "grow": "grow [N [MEMBER]]: add N nodes (default 1), to MEMBER with several members",
    "shrink": "shrink [N [MEMBER]]: remove N nodes (default 1), from MEMBER with several",
    "submit": "submit GROUP [N]: submit the job group GROUP (N jobs, default its count)",
    "route": "route GROUP MEMBER: send GROUP's next jobs to MEMBER (several members)",
    "cancel": "cancel GROUP: cancel the active jobs of GROUP",
    "terminate": "terminate: end the ensemble, cancelling what runs",
}


class Controls:
    """Status and actions of one running ensemble, for the transports to serve."""

    def __init__(self, ensemble: Ensemble, directory: Path | None, file: str | None) -> None:
        self.ensemble = ensemble
        self.origin = {"state": None if directory is None else str(directory), "file": file}

    def status(self, recent: int | None = None) -> dict[str, Any]:
        if recent is None:
            return live_status(self.ensemble, self.origin)
        return live_status(self.ensemble, self.origin, max(0, int(recent)))

    def act(
        self, name: str, value: Any = None, label: Any = None, member: Any = None
    ) -> list[dict[str, Any]]:
        """Perform one operator action; what it recorded. ConfigError for a bad request,
        EnsembleError when the ensemble has ended."""
        groups = set(self.ensemble.templates)
        if name == "cancel":  # also groups a front door submitted (Snakemake's rules)
            groups.update(self.ensemble.snapshot()["groups"])
        action = operator_action(name, value, label, member, groups=groups)
        if self.ensemble.wait(0):
            raise EnsembleError("the ensemble has ended: it takes no more actions")
        return self.ensemble.request_action(action)


def operator_action(
    name: str, value: Any = None, label: Any = None, member: Any = None, *, groups: Any = ()
) -> dict[str, Any]:
    """The action a request names, checked: ConfigError with what to give instead."""
    if name not in OPERATOR_ACTIONS:
        raise ConfigError(f"unknown action '{name}': give one of {', '.join(OPERATOR_ACTIONS)}")
    usage = OPERATOR_ACTIONS[name]
    action: dict[str, Any] = {"name": name}
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{name}: '{value}' is not a count ({usage})")
        try:
            count = int(value)
        except ValueError:
            raise ConfigError(f"{name}: '{value}' is not a count ({usage})") from None
        if count < 1 or name in ("cancel", "terminate"):
            raise ConfigError(f"{name}: '{value}' is not allowed here ({usage})")
        action["value"] = count
    if name in ("grow", "shrink", "route") and member is not None:
        action["member"] = str(member)  # the controller says if there is no such member
    elif member is not None:
        raise ConfigError(f"{name} takes no member ({usage})")
    if name == "route" and "member" not in action:
        raise ConfigError(f"route needs a member ({usage})")
    if name in ("submit", "cancel", "route"):
        if not label:
            raise ConfigError(f"{name} needs a job group ({usage})")
        if str(label) not in groups:
            known = ", ".join(sorted(groups)) or "none"
            raise ConfigError(f"{name}: no job group '{label}' (the groups: {known})")
        action["label"] = str(label)
    elif label:
        raise ConfigError(f"{name} takes no job group ({usage})")
    return action
