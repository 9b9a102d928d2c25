"""Properties of the engine under every node rule, over random nodes, pods, taints, selectors and
gang requirements: no placement breaks a rule, and a batch takes exactly what its pods request."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_placement_fixtures import job, region, snapshot
from tests.unit.test_placement_properties import PROPERTY_SETTINGS
from tsunagu.api.names import UNSCHEDULABLE_TAINT_KEY
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
from tsunagu.placement.engine import plan_batch
from tsunagu.placement.snapshot import ClusterSnapshot

RULE_TAINTS = (
    Taint("dedicated", "infer", TaintEffect.NoSchedule),
    Taint("dedicated", "train", TaintEffect.NoSchedule),
    Taint("gpu", "", TaintEffect.NoExecute),
    Taint("spot", "", TaintEffect.PreferNoSchedule),
)
RULE_TOLERATIONS = (
    Toleration("dedicated", TolerationOperator.Equal, "infer", TaintEffect.NoSchedule),
    Toleration("dedicated", TolerationOperator.Exists),
    Toleration("gpu", TolerationOperator.Exists, "", TaintEffect.NoExecute),
    Toleration("", TolerationOperator.Exists),
    Toleration(UNSCHEDULABLE_TAINT_KEY, TolerationOperator.Exists),
)
RULE_LABELS = {"pool": ("a", "b"), "gen": ("2", "3", "4")}
RULE_RESOURCES = ("cpu", "memory", "example.com/fpga")
RULE_PORTS = (HostPort(80), HostPort(80, "UDP"), HostPort(80, "TCP", "10.0.0.1"), HostPort(90))


@st.composite
def selector_requirements(draw: st.DrawFn) -> SelectorRequirement:
    key = draw(st.sampled_from(sorted(RULE_LABELS)))
    operator = draw(st.sampled_from(list(SelectorOperator)))
    if operator in (SelectorOperator.Exists, SelectorOperator.DoesNotExist):
        return SelectorRequirement(key, operator)
    if operator in (SelectorOperator.Gt, SelectorOperator.Lt):
        return SelectorRequirement("gen", operator, (draw(st.sampled_from(("2", "3"))),))
    values = draw(st.lists(st.sampled_from(RULE_LABELS[key]), min_size=1, unique=True))
    return SelectorRequirement(key, operator, tuple(values))


@st.composite
def rule_requirements(draw: st.DrawFn) -> PodRequirements:
    requests = {"nvidia.com/gpu": draw(st.sampled_from((0, 1, 1, 2, 4)))}
    for resource in RULE_RESOURCES:
        requests[resource] = draw(st.sampled_from((0, 0, 1, 2, 3)))
    terms = None
    if draw(st.integers(0, 3)) == 0:
        terms = tuple(
            NodeSelectorTerm(
                tuple(draw(st.lists(selector_requirements(), max_size=2))),
                tuple(
                    SelectorRequirement("metadata.name", operator, (f"a-{index}",))
                    for operator, index in draw(
                        st.lists(
                            st.tuples(
                                st.sampled_from((SelectorOperator.In, SelectorOperator.NotIn)),
                                st.integers(0, 5),
                            ),
                            max_size=1,
                        )
                    )
                ),
            )
            for _ in range(draw(st.integers(0, 2)))
        )
    return PodRequirements.of(
        requests,
        tolerations=tuple(draw(st.lists(st.sampled_from(RULE_TOLERATIONS), max_size=2))),
        node_selector=draw(
            st.just({})
            | st.dictionaries(
                st.sampled_from(sorted(RULE_LABELS)), st.sampled_from(("a", "3")), max_size=1
            )
        ),
        required_terms=terms,
        host_ports=tuple(
            draw(st.just([]) | st.lists(st.sampled_from(RULE_PORTS), max_size=2, unique=True))
        ),
    )


@dataclass(frozen=True)
class RuleWorld:
    nodes: tuple[NodeInfo, ...]
    pods: tuple[PodUsage, ...]
    jobs: tuple[TrainingJobSpec, ...]

    def snapshot(self) -> ClusterSnapshot:
        return snapshot([region("a")], self.nodes, pods=self.pods)


@st.composite
def rule_worlds(draw: st.DrawFn) -> RuleWorld:
    nodes = []
    for index in range(draw(st.integers(1, 4))):
        gpus = draw(st.sampled_from((0, 2, 4, 8, 8)))
        allocatable: dict[str, int] | None = None
        if draw(st.integers(0, 4)):
            allocatable = {"nvidia.com/gpu": gpus, "pods": draw(st.sampled_from((0, 2, 3, 110)))}
            for resource in RULE_RESOURCES:
                allocatable[resource] = draw(st.sampled_from((0, 3, 6, 6, 16)))
        cordoned = draw(st.integers(0, 4)) == 0
        labels = {key: draw(st.sampled_from(values)) for key, values in RULE_LABELS.items()}
        nodes.append(
            NodeInfo(
                f"a-{index}",
                "a",
                gpus,
                None,
                not cordoned,
                tuple(sorted(labels.items())),
                tuple(
                    draw(
                        st.just([])
                        | st.lists(st.sampled_from(RULE_TAINTS), max_size=2, unique=True)
                    )
                ),
                None if allocatable is None else tuple(sorted(allocatable.items())),
                cordoned,
                True,
            )
        )
    pods = []
    for index in range(draw(st.integers(0, 5))):
        requests = {"nvidia.com/gpu": draw(st.integers(0, 4)), "cpu": draw(st.integers(0, 4))}
        pods.append(
            PodUsage(
                "other",
                f"p{index}",
                draw(st.sampled_from([n.name for n in nodes])),
                requests["nvidia.com/gpu"],
                draw(st.integers(0, 3)) == 0,
                tuple(sorted(requests.items())),
                tuple(draw(st.lists(st.sampled_from(RULE_PORTS), max_size=1))),
            )
        )
    jobs = []
    for index in range(draw(st.integers(1, 8))):
        requirements = draw(rule_requirements())
        gpus = requirements.request("nvidia.com/gpu")
        spec = job(f"j{index}", dataset_name=None, replicas=draw(st.integers(1, 3)), gpus=gpus)
        jobs.append(replace(spec, requirements=requirements))
    return RuleWorld(tuple(nodes), tuple(pods), tuple(jobs))


def _oracle_tolerated(node_info: NodeInfo, tolerations: tuple[Toleration, ...]) -> bool:
    """Every NoSchedule/NoExecute taint (and a cordon) tolerated, spelled out independently."""

    def tolerated(taint: Taint) -> bool:
        return any(
            (t.effect is None or t.effect == taint.effect)
            and (not t.key or t.key == taint.key)
            and (t.operator is TolerationOperator.Exists or t.value == taint.value)
            for t in tolerations
        )

    filtering = [t for t in node_info.taints if t.effect is not TaintEffect.PreferNoSchedule]
    if node_info.unschedulable:
        filtering.append(Taint(UNSCHEDULABLE_TAINT_KEY, "", TaintEffect.NoSchedule))
    return all(tolerated(taint) for taint in filtering)


def _oracle_affine(node_info: NodeInfo, requirements: PodRequirements) -> bool:
    labels = dict(node_info.labels)

    def holds(r: SelectorRequirement, value: str | None) -> bool:
        match r.operator:
            case SelectorOperator.In:
                return value in r.values
            case SelectorOperator.NotIn:
                return value not in r.values
            case SelectorOperator.Exists:
                return value is not None
            case SelectorOperator.DoesNotExist:
                return value is None
            case SelectorOperator.Gt:
                return value is not None and int(value) > int(r.values[0])
            case _:
                return value is not None and int(value) < int(r.values[0])

    if any(labels.get(key) != value for key, value in requirements.node_selector):
        return False
    if requirements.required_terms is None:
        return True
    return any(
        (term.match_expressions or term.match_fields)
        and all(holds(r, labels.get(r.key)) for r in term.match_expressions)
        and all(holds(r, node_info.name) for r in term.match_fields)
        for term in requirements.required_terms
    )


def _oracle_conflict(wanted: HostPort, taken: HostPort) -> bool:
    same_address = taken.host_ip == wanted.host_ip or "0.0.0.0" in (taken.host_ip, wanted.host_ip)
    return (taken.port, taken.protocol) == (wanted.port, wanted.protocol) and same_address


@PROPERTY_SETTINGS
@given(rule_worlds())
def test_no_placement_violates_a_node_rule_or_overcommits_a_resource(world: RuleWorld) -> None:
    decisions, _ = plan_batch(world.jobs, world.snapshot())
    nodes = {n.name: n for n in world.nodes}
    used: dict[str, Counter[str]] = {name: Counter() for name in nodes}
    pod_count: Counter[str] = Counter()
    ports: dict[str, list[HostPort]] = {name: [] for name in nodes}
    for existing in world.pods:
        if existing.node_name is not None and not existing.terminal:
            used[existing.node_name].update(dict(existing.requests or ()))
            pod_count[existing.node_name] += 1
            ports[existing.node_name].extend(existing.host_ports)
    for spec, decision in zip(world.jobs, decisions, strict=True):
        requirements = spec.pod_requirements
        for name in decision.nodes:
            target = nodes[name]
            assert target.schedulable or target.unschedulable
            assert _oracle_tolerated(target, requirements.tolerations)
            assert _oracle_affine(target, requirements)
            for port in requirements.host_ports:
                assert not any(_oracle_conflict(port, taken) for taken in ports[name])
            ports[name].extend(requirements.host_ports)
            used[name].update(dict(requirements.requests))
            pod_count[name] += 1
            allocatable = (
                dict(target.allocatable)
                if target.allocatable is not None
                else {"nvidia.com/gpu": target.allocatable_gpus}
            )
            for resource, amount in requirements.requests:
                if amount and (target.allocatable is not None or resource in allocatable):
                    assert used[name][resource] <= allocatable.get(resource, 0), resource
            if target.allocatable is not None:
                assert pod_count[name] <= allocatable.get("pods", 0)


@PROPERTY_SETTINGS
@given(rule_worlds())
def test_gang_slots_agree_with_packing(world: RuleWorld) -> None:
    snap = world.snapshot()
    for spec in world.jobs:
        demand = snap.demand(spec.pod_requirements, spec.gpu_product)
        slots = snap.gang_slots("a", demand)
        packed = snap.pack_gang("a", demand, spec.replicas)
        assert (packed is not None) == (slots >= spec.replicas)


@PROPERTY_SETTINGS
@given(rule_worlds())
def test_a_batch_takes_exactly_what_its_pods_request(world: RuleWorld) -> None:
    decisions, after = plan_batch(world.jobs, world.snapshot())
    existing: dict[str, Counter[str]] = {n.name: Counter() for n in world.nodes}
    placed: dict[str, Counter[str]] = {n.name: Counter() for n in world.nodes}
    for other in world.pods:
        if other.node_name is not None and not other.terminal:
            existing[other.node_name].update({**dict(other.requests or ()), "pods": 1})
    for spec, decision in zip(world.jobs, decisions, strict=True):
        for name in decision.nodes:
            placed[name].update({**dict(spec.pod_requirements.requests), "pods": 1})
    for target in world.nodes:
        free = after.node_free(target.name)
        if not (target.schedulable or target.unschedulable):
            assert free is None
            continue
        assert free is not None
        if target.allocatable is None:
            allocatable = {"nvidia.com/gpu": target.allocatable_gpus}
        else:
            allocatable = {"pods": 0, **dict(target.allocatable)}
        expected = {
            resource: max(amount - existing[target.name][resource], 0)
            - placed[target.name][resource]
            for resource, amount in allocatable.items()
        }
        assert dict(free) == expected
