"""Properties of the engine over random topologies, datasets and jobs."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_placement_fixtures import NOW, dataset, job, link, node, pod, region, snapshot
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
