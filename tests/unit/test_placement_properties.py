"""Properties of the engine over random topologies, datasets and jobs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_placement_fixtures import NOW, dataset, job, link, node, pod, region, snapshot
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
from tsunagu.api.types import (
    DatasetSpec,
    NodeInfo,
    Objective,
    PodUsage,
    RegionSpec,
    ResidencyMode,
    TrainingJobSpec,
)
from tsunagu.placement.engine import allocations_of, decide, plan_batch
from tsunagu.placement.latency import Measurement
from tsunagu.placement.residency import residency_allows
from tsunagu.placement.snapshot import ClusterSnapshot

REGION_NAMES = ("aomori", "fukuoka", "osaka", "sapporo", "tokyo", "sendai")
PRODUCTS = (None, "H100", "A100")


@dataclass(frozen=True)
class World:
    regions: tuple[RegionSpec, ...]
    nodes: tuple[NodeInfo, ...]
    pods: tuple[PodUsage, ...]
    datasets: tuple[DatasetSpec, ...]
    measurements: tuple[Measurement, ...]
    jobs: tuple[TrainingJobSpec, ...]

    def snapshot(self, shuffle_seed: int | None = None) -> ClusterSnapshot:
        parts = [
            list(self.regions),
            list(self.nodes),
            list(self.pods),
            list(self.datasets),
            list(self.measurements),
        ]
        if shuffle_seed is not None:
            shuffler = random.Random(shuffle_seed)
            for part in parts:
                shuffler.shuffle(part)
        regions, nodes, pods, datasets, measurements = parts
        return snapshot(
            regions, nodes, pods=pods, datasets=datasets, measurements=measurements, now=NOW
        )


@st.composite
def worlds(draw: st.DrawFn) -> World:
    names = draw(st.lists(st.sampled_from(REGION_NAMES), min_size=1, max_size=5, unique=True))
    regions = []
    for name in names:
        targets = draw(st.lists(st.sampled_from(REGION_NAMES), max_size=3, unique=True))
        regions.append(
            region(
                name,
                price=draw(st.floats(0, 5)),
                carbon=draw(st.floats(0, 800)),
                cordoned=draw(st.integers(0, 3)) == 0,
                links=[
                    link(to, draw(st.floats(0.1, 40)), draw(st.none() | st.floats(1, 400)))
                    for to in targets
                    if to != name
                ],
            )
        )
    nodes = []
    for name in names:
        for index in range(draw(st.integers(0, 4))):
            nodes.append(
                node(
                    f"{name}-{index}",
                    name,
                    draw(st.sampled_from((0, 1, 2, 4, 8))),
                    product=draw(st.sampled_from(PRODUCTS)),
                    schedulable=draw(st.integers(0, 5)) > 0,
                )
            )
    pods = [
        pod(f"p{index}", draw(st.sampled_from([n.name for n in nodes])), draw(st.integers(0, 4)))
        for index in range(draw(st.integers(0, 4) if nodes else st.just(0)))
    ]
    datasets = []
    for index in range(draw(st.integers(1, 3))):
        mode = draw(st.sampled_from(list(ResidencyMode)))
        others = st.lists(st.sampled_from(REGION_NAMES), max_size=3, unique=True)
        home = draw(st.sampled_from(REGION_NAMES))
        datasets.append(
            dataset(
                home,
                mode,
                name=f"d{index}",
                allowed=draw(others) if mode is ResidencyMode.RemoteAccess else (),
                denied=[r for r in draw(others) if r != home]
                if mode is ResidencyMode.RemoteAccess
                else (),
                replicas=draw(others.filter(bool)) if mode is ResidencyMode.Replicated else (),
            )
        )
    measurements = [
        Measurement(
            a, b, draw(st.floats(0.1, 40)), draw(st.floats(0, 3)), NOW - draw(st.floats(0, 300))
        )
        for a, b in draw(
            st.lists(st.tuples(st.sampled_from(names), st.sampled_from(REGION_NAMES)), max_size=4)
        )
    ]
    jobs = [
        job(
            f"j{index}",
            dataset_name=draw(st.sampled_from([None, "d0", "d1", "d2", "missing"])),
            replicas=draw(st.integers(0, 4)),
            gpus=draw(st.sampled_from((1, 2, 4, 8))),
            product=draw(st.sampled_from(PRODUCTS)),
            max_rtt_ms=draw(st.none() | st.floats(0, 40)),
            max_loss=draw(st.none() | st.floats(0, 0.3)),
            preferred=draw(st.lists(st.sampled_from(REGION_NAMES), max_size=2)),
            excluded=draw(st.lists(st.sampled_from(REGION_NAMES), max_size=2)),
            objective=draw(st.sampled_from(list(Objective))),
        )
        for index in range(draw(st.integers(1, 6)))
    ]
    return World(
        tuple(regions), tuple(nodes), tuple(pods), tuple(datasets), tuple(measurements), tuple(jobs)
    )


PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(worlds())
def test_compute_never_lands_where_residency_forbids(world: World) -> None:
    decisions, _ = plan_batch(world.jobs, world.snapshot())
    datasets = {d.name: d for d in world.datasets}
    for spec, decision in zip(world.jobs, decisions, strict=True):
        if decision.placed and spec.dataset_ref is not None:
            assert decision.region is not None
            assert residency_allows(datasets[spec.dataset_ref], decision.region)


@PROPERTY_SETTINGS
@given(worlds())
def test_placed_gang_fits_the_nodes_it_names(world: World) -> None:
    snap = world.snapshot()
    nodes = {n.name: n for n in world.nodes}
    for spec in world.jobs:
        decision = decide(spec, snap)
        if not decision.placed:
            continue
        assert len(decision.nodes) == spec.replicas
        for name, gpus in allocations_of(decision, spec).items():
            assert snap.node_region(name) == decision.region
            free = snap.node_free_gpus(name)
            assert free is not None
            assert gpus <= free
            assert spec.gpu_product in (None, nodes[name].gpu_product)


@PROPERTY_SETTINGS
@given(worlds())
def test_batch_never_overcommits_a_node(world: World) -> None:
    snap = world.snapshot()
    decisions, after = plan_batch(world.jobs, snap)
    taken: Counter[str] = Counter()
    for spec, decision in zip(world.jobs, decisions, strict=True):
        taken.update(allocations_of(decision, spec))
    for name, gpus in taken.items():
        before_free = snap.node_free_gpus(name)
        after_free = after.node_free_gpus(name)
        assert before_free is not None
        assert after_free is not None
        assert gpus <= before_free
        assert after_free == before_free - gpus


@PROPERTY_SETTINGS
@given(worlds(), st.integers(0, 2**16))
def test_same_snapshot_gives_same_decision(world: World, seed: int) -> None:
    first = plan_batch(world.jobs, world.snapshot())[0]
    again = plan_batch(world.jobs, world.snapshot())[0]
    reordered_inputs = plan_batch(world.jobs, world.snapshot(shuffle_seed=seed))[0]
    assert first == again == reordered_inputs


@PROPERTY_SETTINGS
@given(worlds())
def test_unplaced_reason_is_the_furthest_candidate(world: World) -> None:
    snap = world.snapshot()
    for spec in world.jobs:
        decision = decide(spec, snap)
        if decision.placed or not decision.candidates:
            continue
        assert decision.reason == decision.candidates[0].reason
        assert not any(c.feasible for c in decision.candidates)


# Every node rule, over random nodes, pods, taints, selectors and requirements ------------------

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
