"""Members: the queues the ensemble submits to. They know nothing of rules."""

from __future__ import annotations

import inspect
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
    """The member called `name` with these settings; an unknown setting is a MemberError."""
    cls = member_class(name)
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise MemberError(
            f"the {name} member has no setting {', '.join(unknown)}: it takes {', '.join(known)}"
        )
    return cls(**settings)
