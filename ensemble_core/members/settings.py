"""Member settings, checked before a member is made and the same way at every front door.

The types come from each member's own `__init__` (a pydantic model is derived from its signature
and type hints, so a member file needs no change); the ranges, which a signature cannot say, are
named here once. A problem is a `SettingError` naming the setting; each front door words the
setting its own way (`--cores`, `--ensemble-cores`, `member_settings['cores']`, `member.cores`)
and keeps the rest of the sentence as is.
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ensemble_core import bounds
from ensemble_core.bounds import shown
from ensemble_core.errors import MemberError
from ensemble_core.members import MEMBERS, member_class
from ensemble_core.members.warm_settings import WARM_BOUNDS, warm_fields, warm_problem

#: Ranges of settings by name, whichever member takes them.
SETTING_BOUNDS = {
    "cores": bounds.CORES,
    "memory_mb": bounds.MEGABYTES,
    "gpus": bounds.GPUS,
    "nodes": bounds.NODES,
    "max_nodes": bounds.NODES,
    "grace_seconds": bounds.Bound(0, 3600),
    "reconnect_delay": bounds.Bound(0, 3600),
    "batch_size": bounds.Bound(1, 1_000_000, whole=True),
    "ttl_seconds": bounds.Bound(0, bounds.DURATION.high, whole=True),
    "watch_seconds": bounds.Bound(1, bounds.DAY, whole=True),
    "reconnect_seconds": bounds.Bound(1, bounds.DAY),
    "reconnect_timeout": bounds.Bound(1, bounds.DAY),
    "reserve_after": bounds.DURATION,
    **WARM_BOUNDS,
}
_TYPE_WORDS = {
    "int": "must be a whole number",
    "float": "must be a number",
    "string": "must be text",
    "bool": "must be true or false",
}


class SettingError(MemberError):
    """One setting that a member cannot take: which, why, and the member it belongs to if it is
    another's."""

    def __init__(self, setting: str, problem: str, owner: str | None = None) -> None:
        self.setting, self.problem, self.owner = setting, problem, owner
        super().__init__(self.phrased(setting))

    def phrased(self, name: str, choose: str = "") -> str:
        """The message with the setting called `name`, as this front door spells it."""
        return f"{name}{' ' if self.owner else ': '}{self.hinted(choose)}"

    def hinted(self, choose: str = "") -> str:
        """The problem; `choose` says how a member is chosen here (`--member {}`), added when
        the setting is another member's."""
        hint = f" ({choose.format(self.owner)})" if choose and self.owner else ""
        return f"{self.problem}{hint}"


def check_settings(member: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the member takes them; a SettingError for the first that it cannot."""
    if not isinstance(member, str) or member not in MEMBERS:
        raise MemberError(f"unknown member {member!r}: choose one of {', '.join(MEMBERS)}")
    if not isinstance(settings, Mapping):
        raise MemberError(
            f"member settings must be a mapping of setting names to values, "
            f"not {type(settings).__name__}"
        )
    if not settings:  # nothing to check: no model built (it costs a run's start a few ms)
        return {}
    model = settings_model(member)
    for setting in settings:
        if setting not in model.model_fields:
            raise _unknown(member, str(setting), model)
    try:
        checked = model.model_validate(settings)
    except ValidationError as error:
        problem = error.errors()[0]
        setting = str(problem["loc"][0])
        kind = problem["type"].split("_")[0]
        words = _TYPE_WORDS.get(kind, problem["msg"])
        raise SettingError(setting, f"{words} (got {shown(problem['input'])})") from None
    values = {name: getattr(checked, name) for name in settings}
    _check_ranges(values)
    return values


def members_with(setting: str) -> list[str]:
    """The members that take a setting of this name."""
    return [name for name in MEMBERS if setting in settings_model(name).model_fields]


@functools.cache
def settings_model(member: str) -> type[BaseModel]:
    """A strict pydantic model of the member's keyword arguments, from its signature. Only what is
    given is checked: a setting the member requires and was not given is the member's to say."""
    init = member_class(member).__init__
    hints = typing.get_type_hints(init)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(init).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = None if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    fields.update(warm_fields())  # every member runs warm workers
    config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(f"{member.title()}MemberSettings", __config__=config, **fields)


def _unknown(member: str, setting: str, model: type[BaseModel]) -> SettingError:
    owners = [name for name in members_with(setting) if name != member]
    if owners:
        return SettingError(
            setting,
            f"is a setting of the {owners[0]} member, but the member is '{member}': drop it or "
            f"choose the {owners[0]} member",
            owners[0],
        )
    return SettingError(
        setting,
        f"the {member} member has no such setting: it takes "
        f"{', '.join(name for name in model.model_fields if name not in warm_fields())}",
    )


def _check_ranges(values: dict[str, Any]) -> None:
    for setting, value in values.items():
        bound = SETTING_BOUNDS.get(setting)
        problem = bound.problem(value) if bound is not None and value is not None else None
        if problem:
            raise SettingError(setting, problem)
    warm = warm_problem(values)
    if warm:
        raise SettingError(*warm)
    nodes, max_nodes = values.get("nodes"), values.get("max_nodes")
    if nodes is not None and max_nodes is not None and max_nodes < nodes:
        raise SettingError(
            "max_nodes",
            f"must be at least nodes ({nodes}), got {max_nodes}: it is the most nodes"
            " grow may reach",
        )
    if values.get("log_dir") is not None:
        problem = _directory_problem(Path(values["log_dir"]))
        if problem:
            raise SettingError("log_dir", problem)


def _directory_problem(path: Path) -> str | None:
    """Why `path` cannot be (made into) a directory we write job output to, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is a file, not a directory: give a directory (made if missing)"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable: give a directory you can write to"
        return None
    parent = next(p for p in path.absolute().parents if p.exists())
    if not parent.is_dir():
        return f"{path} cannot be made: {parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} cannot be made: {parent} is not writable"
    return None
