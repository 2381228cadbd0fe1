"""The one call front doors make: an ensemble on a member, with shared rules, started."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.members import create_member
from ensemble_core.rules.loader import load_rules


def open_ensemble(
    member: str = "local",
    rules: Iterable[str] = (),
    member_settings: dict[str, Any] | None = None,
    *,
    allow_custom: bool = False,
) -> Ensemble:
    """Validate the rules, create the member and start the controller.

    Raises `EnsembleError` (ConfigError, MemberError) with a message fit to show a user as is.
    """
    config = load_rules(list(rules))
    settings = {**config.member, **(member_settings or {})}
    settings.pop("name", None)
    ensemble = Ensemble(create_member(member, **settings), config, allow_custom=allow_custom)
    ensemble.start()
    return ensemble
