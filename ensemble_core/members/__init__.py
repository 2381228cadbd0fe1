"""Members: the queues the ensemble submits to. They know nothing of rules."""

from __future__ import annotations

from typing import Any

from ensemble_core.errors import MemberError
from ensemble_core.members.base import Member

MEMBERS = ("local", "flux", "kubernetes")


def member_class(name: str) -> type[Member]:
    """The class of the member called `name`, imported only when asked for (Flux and Kubernetes
    are optional)."""
    if name == "local":
        from ensemble_core.members.local import LocalMember

        return LocalMember
    if name == "flux":
        from ensemble_core.members.flux import FluxMember

        return FluxMember
    if name == "kubernetes":
        from ensemble_core.members.kubernetes import KubernetesMember

        return KubernetesMember
    raise MemberError(f"unknown member '{name}': choose one of {', '.join(MEMBERS)}")


def create_member(name: str, **settings: Any) -> Member:
    """The member called `name` with these settings; a setting it cannot take is a MemberError
    (a `SettingError` naming the setting)."""
    from ensemble_core.members.settings import check_settings

    return member_class(name)(**check_settings(name, settings))
