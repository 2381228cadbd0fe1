"""Which members can run a job, and which of them gets it: pure functions over what members offer.

A member offers nodes of some size (cores, GPUs and memory per node), a number of nodes (now
and at most), and free-form features ("x86_64", "a100", "spack"). A job needs resources (its
JobSpec) and may require features (`REQUIRES_ATTRIBUTE`). As the rainbow scheduler's direct
match does, a member is compatible when it has every required feature and its largest shape
could hold the job; what a member does not say (None) does not limit. Among the compatible
members a policy chooses (`POLICIES`).

Nothing here touches a member: the router (`members/router.py`) feeds these functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ensemble_core.spec import JobSpec

#: The member a job asks for (a group's `member:`, Snakemake's `ensemble_member` resource,
#: Parsl's `member` key). A `route` action for the job's group goes before it.
MEMBER_ATTRIBUTE = "ensemble_member"
#: The member a rule sent the job to (`member:` of a submit or resubmit action): before routes.
RULE_MEMBER_ATTRIBUTE = "ensemble_member_by_rule"
#: Features the job requires of its member (a list, or text separated by commas).
REQUIRES_ATTRIBUTE = "ensemble_requires"

#: How a member is chosen among the compatible ones (docs/several-members.md).
POLICIES = ("first", "least-backlog", "least-pending")
#: The keys of an offer a user may declare, as the local member's settings name them.
OFFER_KEYS = ("cores", "gpus", "memory_mb", "nodes", "max_nodes")
#: Where `Member.describe()` reports each of them (the local member's keys).
DESCRIBED_KEYS = {
    "cores": "cores_per_node",
    "gpus": "gpus_per_node",
    "memory_mb": "memory_mb_per_node",
    "nodes": "nodes",
    "max_nodes": "max_nodes",
}


@dataclass(frozen=True, slots=True)
class Offer:
    """What one member can run; None where it is not known (and so does not limit)."""

    cores: int | None = None
    gpus: int | None = None
    memory_mb: int | None = None
    nodes: int | None = None
    max_nodes: int | None = None
    features: frozenset[str] = frozenset()

    @property
    def most_nodes(self) -> int | None:
        """The most nodes the member may have: `max_nodes` (what grow may reach), else `nodes`."""
        return self.nodes if self.max_nodes is None else self.max_nodes

    def shown(self) -> dict[str, Any]:
        """For summaries: the known values and the features."""
        shown: dict[str, Any] = {
            key: getattr(self, key) for key in OFFER_KEYS if getattr(self, key) is not None
        }
        if self.features:
            shown["features"] = sorted(self.features)
        return shown


def described_offer(described: Mapping[str, Any]) -> dict[str, int | None]:
    """The offer a member's `describe()` reports under the local member's keys (None where it
    reports none): what `Member.offers()` returns unless a member says more."""
    values: dict[str, int | None] = {}
    for key, described_key in DESCRIBED_KEYS.items():
        value = described.get(described_key)
        values[key] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return values


def offer_of(
    offered: Mapping[str, int | None],
    declared: Mapping[str, int | None] | None = None,
    features: Iterable[str] = (),
) -> Offer:
    """A member's offer: what it offers (`Member.offers()`), with what the user declared over it."""
    values = {key: offered.get(key) for key in OFFER_KEYS}
    values.update({k: v for k, v in (declared or {}).items() if k in OFFER_KEYS})
    return Offer(**values, features=frozenset(features))


def required_features(spec: JobSpec) -> frozenset[str]:
    """The features a job requires: its attribute as a list, or as text split at commas."""
    value = spec.attributes.get(REQUIRES_ATTRIBUTE)
    if not value:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(str(item).strip() for item in items if str(item).strip())


def lacks(spec: JobSpec, offer: Offer, features: frozenset[str] | None = None) -> list[str]:
    """What `offer` lacks to ever run the job (empty: it is compatible), in words."""
    missing = sorted((required_features(spec) if features is None else features) - offer.features)
    found = [f"feature{'s' if len(missing) > 1 else ''} {', '.join(missing)}"] if missing else []
    most = offer.most_nodes
    memory = spec.memory_mb or 0
    if spec.nodes is not None:
        if most is not None and spec.nodes > most:
            found.append(f"{spec.nodes} nodes (it has at most {most})")
        slots = math.ceil(spec.tasks / spec.nodes)
        found += _per_node(offer, slots, spec, math.ceil(memory / spec.nodes))
        return found
    # Tasks are packed onto nodes: one task must fit a node, and all of them the nodes.
    per_task = _per_node(offer, 1, spec, math.ceil(memory / spec.tasks))
    if per_task:
        return found + per_task
    fit = _tasks_per_node(offer, spec, math.ceil(memory / spec.tasks))
    if most is not None and fit is not None and fit * most < spec.tasks:
        found.append(
            f"room for {spec.tasks} tasks (it holds {fit * most}: {most} node(s) of {fit})"
        )
    return found


def _per_node(offer: Offer, slots: int, spec: JobSpec, memory: int) -> list[str]:
    """What a node of `offer` lacks to hold `slots` tasks of the job and `memory` MB."""
    found = []
    for what, needed, has in (
        ("cores", slots * spec.cores_per_task, offer.cores),
        ("gpus", slots * spec.gpus_per_task, offer.gpus),
        ("MB", memory, offer.memory_mb),
    ):
        if has is not None and needed > has:
            found.append(f"{needed} {what} per node (it has {has})")
    return found


def _tasks_per_node(offer: Offer, spec: JobSpec, memory_per_task: int) -> int | None:
    """How many of the job's tasks one node holds; None when nothing known limits it."""
    limits = []
    if offer.cores is not None:
        limits.append(offer.cores // spec.cores_per_task)
    if offer.gpus is not None and spec.gpus_per_task:
        limits.append(offer.gpus // spec.gpus_per_task)
    if offer.memory_mb is not None and memory_per_task:
        limits.append(offer.memory_mb // memory_per_task)
    return min(limits) if limits else None


def compatible(spec: JobSpec, offers: Mapping[str, Offer]) -> tuple[list[str], dict[str, str]]:
    """The members that can run the job (in the offers' order) and, for the others, what each
    lacks."""
    features = required_features(spec)
    able, lacking = [], {}
    for name, offer in offers.items():
        missing = lacks(spec, offer, features)
        if missing:
            lacking[name] = "; ".join(missing)
        else:
            able.append(name)
    return able, lacking


def unsatisfiable_note(lacking: Mapping[str, str]) -> str:
    """Why no member can run a job, naming what each lacks (Flux's `alloc` exception note)."""
    each = "; ".join(f"{name} lacks {what}" for name, what in lacking.items())
    return f"unsatisfiable request: no member can run it ({each})"


def choose(
    candidates: Sequence[str],
    policy: str,
    backlog: Mapping[str, int],
    pending: Mapping[str, float],
) -> str:
    """The member a policy picks among compatible `candidates` (in listed order, never empty):
    `first` the first; `least-backlog` the fewest jobs waiting to start; `least-pending` the
    lowest recent pending time. Ties go to the one listed first."""
    if policy == "least-backlog" and len(candidates) > 1:
        return min(candidates, key=lambda name: backlog.get(name, 0))
    if policy == "least-pending" and len(candidates) > 1:
        return min(candidates, key=lambda name: pending.get(name, 0.0))
    return candidates[0]


def sent_to(spec: JobSpec, member: str) -> JobSpec:
    """A copy of the job that a rule sends to `member` (before any route)."""
    attributes = {**spec.attributes, RULE_MEMBER_ATTRIBUTE: member}
    return spec.model_copy(update={"attributes": attributes})
