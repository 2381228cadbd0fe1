"""Matching a job against what members offer, and the policies that choose among them."""

from __future__ import annotations

import pytest

from ensemble_core.matching import (
    REQUIRES_ATTRIBUTE,
    Offer,
    choose,
    compatible,
    described_offer,
    lacks,
    offer_of,
    required_features,
    sent_to,
    unsatisfiable_note,
)
from ensemble_core.members.local import LocalMember
from ensemble_core.members.local_scheduler import Capacity, Scheduler
from ensemble_core.spec import JobSpec

NODE = Offer(cores=4, gpus=0, memory_mb=1000, nodes=1, max_nodes=2)


def job(**fields) -> JobSpec:
    return JobSpec(command=["true"], **fields)


def test_what_a_member_does_not_say_does_not_limit():
    huge = job(nodes=1000, tasks=1000, cores_per_task=512, gpus_per_task=8, memory_mb=10**9)
    assert lacks(huge, Offer()) == []


@pytest.mark.parametrize(
    ("spec", "missing"),
    [
        (job(cores_per_task=4), []),
        (job(cores_per_task=5), ["5 cores per node (it has 4)"]),
        (job(gpus_per_task=1), ["1 gpus per node (it has 0)"]),
        (job(memory_mb=1001), ["1001 MB per node (it has 1000)"]),
        (job(nodes=3), ["3 nodes (it has at most 2)"]),
        (job(nodes=2, tasks=8), []),  # four tasks a node, on the two nodes grow may reach
        (job(nodes=2, tasks=9), ["5 cores per node (it has 4)"]),
        (job(nodes=2, memory_mb=2000), []),  # the memory is shared among the nodes
        (job(tasks=8), []),  # packed: four a node, two nodes
        (job(tasks=9), ["room for 9 tasks (it holds 8: 2 node(s) of 4)"]),
        (job(tasks=2, memory_mb=1500), []),  # one task a node: two fit
        (job(tasks=3, memory_mb=1800), ["room for 3 tasks (it holds 2: 2 node(s) of 1)"]),
    ],
)
def test_resources_are_matched_as_the_local_scheduler_places_them(spec, missing):
    assert lacks(spec, NODE) == missing
    # The local member's own scheduler, at its largest, agrees on every case.
    scheduler = Scheduler(Capacity(4, 1000, 0), 1, 2, None)
    assert scheduler.fits_ever(spec) is (missing == [])


def test_required_features_as_a_list_or_as_text():
    assert required_features(job(attributes={REQUIRES_ATTRIBUTE: ["a100", " x86 "]})) == {
        "a100",
        "x86",
    }
    assert required_features(job(attributes={REQUIRES_ATTRIBUTE: "a100, x86,"})) == {"a100", "x86"}
    assert required_features(job()) == frozenset()
    gpu = job(attributes={REQUIRES_ATTRIBUTE: "a100,ib"})
    assert lacks(gpu, Offer(features=frozenset({"a100"}))) == ["feature ib"]
    assert lacks(gpu, Offer()) == ["features a100, ib"]


def test_compatible_members_keep_their_order_and_the_others_say_what_they_lack():
    offers = {
        "hpc": Offer(cores=64, gpus=4, features=frozenset({"a100"})),
        "cloud": Offer(cores=8, gpus=0),
        "here": Offer(cores=2),
    }
    spec = job(cores_per_task=4)
    assert compatible(spec, offers) == (["hpc", "cloud"], {"here": "4 cores per node (it has 2)"})
    gpu = job(cores_per_task=4, gpus_per_task=1)
    assert compatible(gpu, offers)[0] == ["hpc"]  # here says nothing of GPUs: cores rule it out
    note = unsatisfiable_note(
        compatible(job(cores_per_task=128, attributes={REQUIRES_ATTRIBUTE: ["a100"]}), offers)[1]
    )
    assert note == (
        "unsatisfiable request: no member can run it (hpc lacks 128 cores per node (it has 64); "
        "cloud lacks feature a100; 128 cores per node (it has 8); here lacks feature a100; "
        "128 cores per node (it has 2))"
    )


def test_an_offer_comes_from_describe_with_what_the_user_declared_over_it(tmp_path):
    member = LocalMember(
        cores=3, memory_mb=512, gpus=1, nodes=1, max_nodes=4, log_dir=str(tmp_path)
    )
    assert member.offers() == {"cores": 3, "gpus": 1, "memory_mb": 512, "nodes": 1, "max_nodes": 4}
    offer = offer_of(member.offers(), {"cores": 2}, ["x86_64"])
    assert offer == Offer(2, 1, 512, 1, 4, frozenset({"x86_64"}))
    assert offer.shown() == {
        "cores": 2,
        "gpus": 1,
        "memory_mb": 512,
        "nodes": 1,
        "max_nodes": 4,
        "features": ["x86_64"],
    }
    # A member that reports none of these (Kubernetes) offers what it is declared to.
    assert described_offer({"member": "kubernetes", "nodes": "many"}) == dict.fromkeys(
        ("cores", "gpus", "memory_mb", "nodes", "max_nodes")
    )


def test_a_rule_sends_a_copy_of_the_job():
    spec = job(attributes={"a": 1})
    sent = sent_to(spec, "big")
    assert sent.attributes == {"a": 1, "ensemble_member_by_rule": "big"}
    assert spec.attributes == {"a": 1}


def test_policies_choose_among_the_compatible_in_listed_order_on_ties():
    candidates = ["hpc", "cloud", "here"]
    backlog = {"hpc": 5, "cloud": 2, "here": 2}
    pending = {"hpc": 0.5, "cloud": 30.0, "here": 0.5}
    assert choose(candidates, "first", backlog, pending) == "hpc"
    assert choose(candidates, "least-backlog", backlog, pending) == "cloud"
    assert choose(candidates, "least-pending", backlog, pending) == "hpc"
    assert choose(["here"], "least-backlog", backlog, pending) == "here"
    assert choose(candidates, "least-backlog", {}, {}) == "hpc"  # nothing known: the first
