"""Members: the queues the ensemble submits to. They know nothing of rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ensemble_core.errors import MemberError

if TYPE_CHECKING:  # a warm worker imports this package and must stay small (warm_task.py)
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
    (a `SettingError` naming the setting). With `workers` set, the member runs warm workers:
    a WarmMember around it."""
    from ensemble_core.members.settings import check_settings
    from ensemble_core.members.warm_settings import split_warm

    checked = check_settings(name, settings)
    own, warm = split_warm(checked) if checked else ({}, {})  # (split_warm imports WarmMember)
    member = member_class(name)(**own)
    if "workers" not in warm:
        return member
    from ensemble_core.members.warm import WarmMember

    return WarmMember(member, **warm)
