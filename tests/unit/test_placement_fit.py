"""The engine under every node rule: capacity, packing, consumption and rejection messages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_placement_fixtures import NAMESPACE, job, region, snapshot
from tsunagu.api.conditions import Reason
from tsunagu.api.scheduling import (
    HostPort,
    NodeSelectorTerm,
    PodRequirements,
    SelectorOperator,
    SelectorRequirement,
    Taint,
    TaintEffect,
    Toleration,
    TolerationOperator,
)
from tsunagu.api.types import NodeInfo, PodUsage, TrainingJobSpec
from tsunagu.placement.engine import Decision, decide, plan_batch

GI = 2**30
DEDICATED = Taint("dedicated", "infer", TaintEffect.NoSchedule)
TOLERATE_DEDICATED = Toleration("dedicated", TolerationOperator.Exists)


def node(
    name: str,
    *,
    gpus: int = 8,
    cpu: int = 96,
    pods: int = 110,
    labels: dict[str, str] | None = None,
    taints: tuple[Taint, ...] = (),
    cordoned: bool = False,
    extra: dict[str, int] | None = None,
) -> NodeInfo:
    allocatable = {"nvidia.com/gpu": gpus, "cpu": cpu * 1000, "memory": 1024 * GI, "pods": pods}
    allocatable.update(extra or {})
    return NodeInfo(
        name,
        "a",
        gpus,
        None,
        not cordoned,
        tuple(sorted((labels or {}).items())),
        taints,
        tuple(sorted(allocatable.items())),
        cordoned,
        True,
    )


def busy(node_name: str, *, cpu: int = 0, gpus: int = 0, terminal: bool = False) -> PodUsage:
    requests = tuple(sorted({"cpu": cpu * 1000, "nvidia.com/gpu": gpus}.items()))
    return PodUsage("other", f"on-{node_name}-{cpu}-{gpus}", node_name, gpus, terminal, requests)


def gang(
    replicas: int,
    gpus: int,
    *,
    cpu: int = 0,
    name: str = "job",
    tolerations: tuple[Toleration, ...] = (),
    node_selector: dict[str, str] | None = None,
    required_terms: tuple[NodeSelectorTerm, ...] | None = None,
    host_ports: tuple[HostPort, ...] = (),
) -> TrainingJobSpec:
    requirements = PodRequirements.of(
        {"nvidia.com/gpu": gpus, "cpu": cpu * 1000},
        tolerations=tolerations,
        node_selector=node_selector,
        required_terms=required_terms,
        host_ports=host_ports,
    )
    return replace(
        job(name, dataset_name=None, replicas=replicas, gpus=gpus), requirements=requirements
    )


def decide_on(
    nodes: list[NodeInfo], spec: TrainingJobSpec, pods: tuple[PodUsage, ...] = ()
) -> Decision:
    return decide(spec, snapshot([region("a")], nodes, pods=pods))


def test_a_node_that_fits_two_by_gpus_and_one_by_cpu_holds_one() -> None:
    world = snapshot([region("a")], [node("a1"), node("a2")])
    demand = world.demand(gang(1, 4, cpu=60).pod_requirements, None)
    assert world.gang_slots("a", demand) == 2
    assert world.replica_slots("a", None, 4) == 4
    decision = decide(gang(2, 4, cpu=60), world)
    assert decision.nodes == ("a1", "a2")
    assert not decide(gang(3, 4, cpu=60), world).placed


def test_rejection_says_which_resource_and_how_much_is_free() -> None:
    decision = decide_on([node("a1"), node("a2")], gang(2, 4, cpu=60), (busy("a2", cpu=60),))
    assert decision.reason == Reason.InsufficientCapacity
    assert "room for 1 of 2 replicas" in decision.message
    assert "1 node short of cpu: 60 requested, 36 free on the best node" in decision.message


def test_rejection_counts_tainted_nodes() -> None:
    nodes = [node(f"a{i}", taints=(DEDICATED,)) for i in range(3)]
    decision = decide_on(nodes, gang(1, 1))
    assert not decision.placed
    assert "3 nodes tainted dedicated=infer:NoSchedule not tolerated" in decision.message
    tolerant = decide_on(nodes, gang(1, 1, tolerations=(TOLERATE_DEDICATED,)))
    assert tolerant.nodes == ("a0",)


def test_prefer_no_schedule_does_not_filter() -> None:
    soft = Taint("dedicated", "infer", TaintEffect.PreferNoSchedule)
    assert decide_on([node("a1", taints=(soft,))], gang(1, 1)).placed


def test_node_selector_and_required_affinity_choose_the_nodes() -> None:
    nodes = [node("a1"), node("a2", labels={"pool": "train", "gen": "4"}), node("a3")]
    by_selector = decide_on(nodes, gang(2, 4, node_selector={"pool": "train"}))
    assert by_selector.nodes == ("a2", "a2")
    newer = NodeSelectorTerm((SelectorRequirement("gen", SelectorOperator.Gt, ("3",)),))
    by_affinity = decide_on(nodes, gang(3, 4, required_terms=(newer,)))
    assert not by_affinity.placed
    assert "2 nodes not matching the pod's nodeSelector or node affinity" in by_affinity.message


def test_match_fields_pin_the_node_by_name() -> None:
    only_a3 = NodeSelectorTerm(
        (), (SelectorRequirement("metadata.name", SelectorOperator.In, ("a3",)),)
    )
    nodes = [node("a1"), node("a2"), node("a3")]
    decision = decide_on(nodes, gang(2, 4, required_terms=(only_a3,)))
    assert decision.nodes == ("a3", "a3")
    too_big = decide_on(nodes, gang(3, 4, required_terms=(only_a3,)))
    assert "2 nodes not matching" in too_big.message


def test_host_ports_take_one_pod_per_node_and_stay_taken() -> None:
    port = (HostPort(29500),)
    nodes = [node("a1"), node("a2")]
    spread = decide_on(nodes, gang(2, 1, host_ports=port))
    assert sorted(spread.nodes) == ["a1", "a2"]
    first, second = plan_batch(
        [gang(2, 1, host_ports=port, name="one"), gang(1, 1, host_ports=port, name="two")],
        snapshot([region("a")], nodes),
    )[0]
    assert first.placed
    assert not second.placed
    assert "2 nodes host port 29500/TCP in use" in second.message


def test_the_pod_count_is_a_resource() -> None:
    nodes = [node("a1", pods=2)]
    assert decide_on(nodes, gang(2, 1)).placed
    crowded = decide_on(nodes, gang(2, 1), (busy("a1"),))
    assert not crowded.placed
    assert decide_on(nodes, gang(1, 1), (busy("a1"),)).placed


def test_extended_resources_other_than_gpus() -> None:
    nodes = [node("a1", extra={"example.com/fpga": 2}), node("a2")]
    requirements = PodRequirements.of({"nvidia.com/gpu": 1, "example.com/fpga": 1})
    spec = replace(job(dataset_name=None, replicas=2, gpus=1), requirements=requirements)
    assert decide_on(nodes, spec).nodes == ("a1", "a1")
    bigger = replace(spec, replicas=3)
    decision = decide_on(nodes, bigger)
    assert "1 node short of example.com/fpga: 1 requested, 0 free on the best node" in (
        decision.message
    )


def test_pods_of_any_scheduler_take_capacity_until_they_end() -> None:
    nodes = [node("a1")]
    assert not decide_on(nodes, gang(1, 1, cpu=40), (busy("a1", cpu=60),)).placed
    ended = busy("a1", cpu=60, terminal=True)
    assert decide_on(nodes, gang(1, 1, cpu=40), (ended,)).placed


def test_a_cordoned_node_takes_only_pods_that_tolerate_it() -> None:
    nodes = [node("a1", gpus=1), node("a2", cordoned=True)]
    plain = decide_on(nodes, gang(1, 4))
    assert not plain.placed
    assert "1 node cordoned (spec.unschedulable), not tolerated" in plain.message
    cordon = Toleration("node.kubernetes.io/unschedulable", TolerationOperator.Exists)
    assert decide_on(nodes, gang(1, 4, tolerations=(cordon,))).nodes == ("a2",)


def test_plan_batch_consumes_every_resource() -> None:
    nodes = [node("a1")]
    decisions, after = plan_batch(
        [gang(1, 1, cpu=60, name="one"), gang(1, 1, cpu=60, name="two")],
        snapshot([region("a")], nodes),
    )
    assert [d.placed for d in decisions] == [True, False]
    free = after.node_free("a1")
    assert free is not None
    assert (free["cpu"], free["nvidia.com/gpu"], free["pods"]) == (36_000, 7, 109)


def test_best_fit_prefers_the_node_with_fewest_free_gpus_that_fits_every_resource() -> None:
    nodes = [node("a1"), node("a2"), node("a3")]
    pods = (busy("a1", gpus=6), busy("a2", gpus=4, cpu=90))
    decision = decide_on(nodes, gang(1, 2, cpu=10), pods)
    # a1 has the fewest free GPUs; a2 fewer than a3 but not the CPUs.
    assert decision.nodes == ("a1",)
    decision = decide_on(nodes, gang(2, 2, cpu=10), pods)
    assert decision.nodes == ("a1", "a3")


@pytest.mark.parametrize("replicas", [1, 2])
def test_gpu_only_jobs_see_the_same_capacity_as_before(replicas: int) -> None:
    world = snapshot([region("a")], [node("a1"), node("a2")])
    plain = job(dataset_name=None, replicas=replicas, gpus=8)
    assert decide(plain, world).nodes == ("a1", "a2")[:replicas]
    assert plain.namespace == NAMESPACE


def test_prefer_no_schedule_orders_nodes_without_excluding_them() -> None:
    soft = Taint("spot", "", TaintEffect.PreferNoSchedule)
    nodes = [node("a1", taints=(soft,)), node("a2")]
    pods = (busy("a2", gpus=4),)
    # a1 fits tighter by GPUs (a2 is half full) but carries an untolerated preference.
    assert decide_on(nodes, gang(2, 4), pods).nodes == ("a2", "a1")
    tolerant = gang(1, 4, tolerations=(Toleration("spot", TolerationOperator.Exists),))
    assert decide_on(nodes, tolerant, pods).nodes == ("a2",)
    assert decide_on([node("a1", taints=(soft,))], gang(1, 4)).nodes == ("a1",)
