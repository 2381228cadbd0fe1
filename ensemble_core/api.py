"""The one call front doors make: an ensemble on a member (or several), with shared rules,
started."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import ConfigError, MemberError
from ensemble_core.members import create_member
from ensemble_core.members.declared import create_router, in_config, load_members
from ensemble_core.rules.loader import load_rules
from ensemble_core.runs import digest, open_state


def open_ensemble(
    member: str = "local",
    rules: Iterable[str] | str = (),
    member_settings: Mapping[str, Any] | None = None,
    *,
    allow_custom: bool = False,
    members: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    state: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    front_door: str = "api",
) -> Ensemble:
    """Validate the rules and the member settings, create the member and start the controller.

    `rules`: rule sets by name or path; one name alone is one rule set, not a list of letters.
    `members`: several members instead of one (`member` and `member_settings` are then not
    used): a mapping `{name: settings}`, or one with `members:`, `default:` and `routing:`, or
    the path of a YAML file holding those (docs/several-members.md). `defaults`: settings per
    kind of member that each member of that kind gets unless it sets them. `state`: a directory
    where the ensemble is recorded; an unfinished ensemble recorded there (its front door killed,
    or detached) is resumed, and jobs asked for again by identity follow the ones it has.
    Raises `EnsembleError` (ConfigError, MemberError) with a message fit to show a user as is.
    """
    several = None if members is None else load_members(members)
    config = load_rules(rule_names(rules), None if several is None else list(several.members))
    several = several or in_config(config)
    if several is not None:
        created = create_router(several, defaults)
    else:
        if member_settings is not None and not isinstance(member_settings, Mapping):
            raise MemberError(
                "member settings must be a mapping of setting names to values, "
                f"not {type(member_settings).__name__}"
            )
        settings = {**config.member, **(member_settings or {})}
        settings.pop("name", None)
        created = create_member(member, **settings)
    journal = None
    if state is not None:
        command = {"front_door": front_door, "member": created.name, "digest": digest(config)}
        journal = open_state(state, fresh=fresh, command=command)
    ensemble = Ensemble(created, config, allow_custom=allow_custom, state=journal)
    ensemble.start()
    return ensemble


def rule_names(rules: Iterable[str] | str) -> list[str]:
    """The rule sets as a list of names or paths; a ConfigError for anything else."""
    if isinstance(rules, (str, os.PathLike)):
        return [os.fspath(rules)]
    try:
        names = list(rules)
    except TypeError:
        raise ConfigError(
            f"rules: give a list of rule set names or paths, not {type(rules).__name__}"
        ) from None
    for name in names:
        if not isinstance(name, (str, os.PathLike)):
            raise ConfigError(
                f"rules: {name!r} is not a rule set name or path (give text such as 'retry-oom')"
            )
    return [os.fspath(name) for name in names]
