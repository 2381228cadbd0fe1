"""Several members as a file or a front door declares them, checked, and made into a router.

```yaml
members:
  hpc: {name: flux, features: [x86_64, spack], offers: {cores: 64, nodes: 16}}
  cloud: {name: kubernetes, image: python:3.12-slim}
  here: {name: local, cores: 4}
default: hpc              # optional: unpinned jobs it can run go there
routing: {policy: first}  # first | least-backlog | least-pending
```

Each entry is one member's settings, as `member:` holds them for one member, plus `features`
(free-form words the jobs may require) and `offers` (what the member can run, over what it
reports itself: `cores`, `gpus`, `memory_mb` per node, `nodes`, `max_nodes`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ensemble_core import bounds
from ensemble_core.bounds import shown
from ensemble_core.errors import ConfigError, MemberError
from ensemble_core.matching import OFFER_KEYS, POLICIES
from ensemble_core.members import MEMBERS, create_member
from ensemble_core.members.settings import SettingError, check_settings

if TYPE_CHECKING:
    from ensemble_core.members.router import RouterMember

#: A member's name: it starts metric names (`count.@cloud.running`) and ids (`cloud/7`).
MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: The range of each key of `offers`.
OFFER_BOUNDS = {
    "cores": bounds.CORES,
    "gpus": bounds.GPUS,
    "memory_mb": bounds.MEGABYTES,
    "nodes": bounds.NODES,
    "max_nodes": bounds.NODES,
}


class DeclarationError(MemberError):
    """One problem of a declaration, at `place` (keys from the top of the document)."""

    def __init__(self, place: list[str | int], problem: str) -> None:
        self.place, self.problem = place, problem
        super().__init__(f"{'.'.join(str(p) for p in place)}: {problem}")


@dataclass(frozen=True)
class Declaration:
    """One declared member: its kind, its settings, its features and declared offer."""

    kind: str
    settings: dict[str, Any]
    features: tuple[str, ...] = ()
    offers: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Declared:
    """Several members, the default and the routing policy, checked."""

    members: dict[str, Declaration]
    default: str | None = None
    policy: str = "first"


def declared(
    blocks: Mapping[str, Any], default: str | None = None, policy: str = "first"
) -> Declared:
    """Check a `members:` mapping (and `default:`, the policy); a DeclarationError for the
    first problem."""
    if not isinstance(blocks, Mapping) or not blocks:
        raise DeclarationError(
            ["members"], "give a mapping of member names to settings, e.g. {here: {name: local}}"
        )
    members = {str(name): member_of(str(name), block) for name, block in blocks.items()}
    if default is not None and default not in members:
        names = ", ".join(members)
        raise DeclarationError(["default"], f"no member '{default}' (members: {names})")
    if policy not in POLICIES:
        raise DeclarationError(
            ["routing", "policy"], f"{shown(policy)}: choose one of {', '.join(POLICIES)}"
        )
    return Declared(members, default, policy)


def member_of(name: str, block: Any) -> Declaration:
    """One entry of `members:`, checked: its kind, settings, features and offers."""
    if not MEMBER_NAME.match(name):
        raise DeclarationError(
            ["members", name],
            "a member's name is letters, digits, '_', '.' or '-' (it starts metric names such "
            "as count.@cloud.running and job ids such as cloud/7)",
        )
    if not isinstance(block, Mapping):
        raise DeclarationError(
            ["members", name],
            f"expected the member's settings, e.g. {{name: local}}, not {shown(block)}",
        )
    settings = dict(block)
    kind = settings.pop("name", "local")
    if kind not in MEMBERS:
        raise DeclarationError(
            ["members", name, "name"],
            f"unknown member {shown(kind)}: choose one of {', '.join(MEMBERS)}",
        )
    features = _features(name, settings.pop("features", []))
    offers = _offers(name, settings.pop("offers", {}))
    try:
        checked = check_settings(kind, settings)
    except SettingError as error:
        choose = "members: {{" + name + ": {{name: {}}}}}"  # the member that takes it
        raise DeclarationError(["members", name, error.setting], error.hinted(choose)) from None
    return Declaration(kind, checked, features, offers)


def _features(name: str, features: Any) -> tuple[str, ...]:
    if not isinstance(features, list) or not all(
        isinstance(item, str) and item.strip() for item in features
    ):
        raise DeclarationError(
            ["members", name, "features"],
            f"a list of words such as [x86_64, a100] (got {shown(features)})",
        )
    return tuple(item.strip() for item in features)


def _offers(name: str, offers: Any) -> dict[str, int]:
    if not isinstance(offers, Mapping):
        raise DeclarationError(
            ["members", name, "offers"],
            f"a mapping such as {{cores: 64, nodes: 16}} (got {shown(offers)})",
        )
    for key, value in offers.items():
        if key not in OFFER_BOUNDS:
            raise DeclarationError(
                ["members", name, "offers", str(key)],
                f"unknown key: an offer has {', '.join(OFFER_KEYS)} (per node, and node counts)",
            )
        problem = OFFER_BOUNDS[key].problem(value)
        if problem:
            raise DeclarationError(["members", name, "offers", key], problem)
    return dict(offers)


def from_mapping(mapping: Any) -> Declared:
    """Members as a front door hands them over: `{name: settings, ...}`, or a whole document
    `{members: {...}, default: ..., routing: {policy: ...}}`. A ConfigError names the place."""
    try:
        if isinstance(mapping, Mapping) and "members" in mapping:
            routing = mapping.get("routing") or {}
            if not isinstance(routing, Mapping):
                raise DeclarationError(["routing"], "a mapping such as {policy: least-backlog}")
            return declared(
                mapping["members"], mapping.get("default"), routing.get("policy", "first")
            )
        return declared(mapping)
    except DeclarationError as error:
        raise ConfigError(f"members: {error}") from None


def load_members(source: Any) -> Declared:
    """Members from a YAML file (its `members:`, `default:` and `routing:`: an ensemble file
    works) or a mapping; a ConfigError naming the file, the line and the fix."""
    if isinstance(source, Mapping):
        return from_mapping(source)
    from ensemble_core.rules.loader import load

    config = load(str(source))
    found = in_config(config)
    if found is None:
        raise ConfigError(
            f"{source}: no members: in it; declare them as members: {{hpc: {{name: flux}}, "
            "here: {name: local}}"
        )
    return found


def in_config(config: Any) -> Declared | None:
    """The members an ensemble file declares (checked when it was loaded), or None."""
    if not config.members:
        return None
    return declared(config.members, config.default, config.routing.policy)


def create_router(
    members: Declared, defaults: Mapping[str, Mapping[str, Any]] | None = None
) -> RouterMember:
    """The router over the declared members, each made with its settings (over `defaults`
    per kind: a front door's log directory for local members)."""
    from ensemble_core.members.router import RouterMember

    made = {}
    try:
        for name, member in members.members.items():
            settings = {**(defaults or {}).get(member.kind, {}), **member.settings}
            made[name] = create_member(member.kind, **settings)
    except MemberError as error:
        raise MemberError(f"members.{name}: {error}") from None
    return RouterMember(
        made,
        default=members.default,
        policy=members.policy,
        features={name: member.features for name, member in members.members.items()},
        offers={name: member.offers for name, member in members.members.items()},
    )
