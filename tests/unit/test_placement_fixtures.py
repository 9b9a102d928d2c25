"""Builders shared by the placement tests (this module holds no tests of its own)."""

from __future__ import annotations

from collections.abc import Iterable

from tsunagu.api.types import (
    DataProfile,
    DatasetSpec,
    DeclaredLink,
    GeoPoint,
    LinkKind,
    NodeInfo,
    Objective,
    PlacementPolicy,
    PodUsage,
    RegionSpec,
    Residency,
    ResidencyMode,
    TrainingJobSpec,
)
from tsunagu.placement.latency import LatencyMatrix, Measurement
from tsunagu.placement.snapshot import ClusterSnapshot

NOW = 1_000_000.0
NAMESPACE = "team-a"


def link(to: str, rtt_ms: float, bandwidth_gbps: float | None = None) -> DeclaredLink:
    return DeclaredLink(to, rtt_ms, bandwidth_gbps, LinkKind.APN)


def region(
    name: str,
    *,
    price: float = 1.0,
    carbon: float = 300.0,
    cordoned: bool = False,
    links: Iterable[DeclaredLink] = (),
    location: GeoPoint | None = None,
    node_selector: dict[str, str] | None = None,
) -> RegionSpec:
    return RegionSpec(
        name=name,
        prefecture="JP-13",
        display_name=name,
        gpu_hour_price=price,
        carbon_intensity=carbon,
        cordoned=cordoned,
        links=tuple(links),
        location=location,
        node_selector=tuple(sorted(node_selector.items())) if node_selector else None,
    )


def node(
    name: str,
    region_name: str | None,
    gpus: int = 8,
    *,
    product: str | None = None,
    schedulable: bool = True,
    labels: dict[str, str] | None = None,
) -> NodeInfo:
    return NodeInfo(
        name, region_name, gpus, product, schedulable, tuple(sorted((labels or {}).items()))
    )


def pod(name: str, node_name: str | None, gpus: int, *, terminal: bool = False) -> PodUsage:
    return PodUsage(NAMESPACE, name, node_name, gpus, terminal)


def dataset(
    home: str,
    mode: ResidencyMode = ResidencyMode.RemoteAccess,
    *,
    name: str = "data",
    allowed: Iterable[str] = (),
    denied: Iterable[str] = (),
    replicas: Iterable[str] = (),
) -> DatasetSpec:
    return DatasetSpec(
        namespace=NAMESPACE,
        name=name,
        home_region=home,
        residency=Residency(mode, frozenset(allowed), frozenset(denied), frozenset(replicas)),
    )


def job(
    name: str = "job",
    *,
    dataset_name: str | None = "data",
    replicas: int = 1,
    gpus: int = 8,
    product: str | None = None,
    max_rtt_ms: float | None = None,
    max_loss: float | None = None,
    preferred: Iterable[str] = (),
    excluded: Iterable[str] = (),
    objective: Objective = Objective.Balanced,
    profile: DataProfile | None = None,
    priority: int = 0,
    created_at: float = 0.0,
) -> TrainingJobSpec:
    return TrainingJobSpec(
        namespace=NAMESPACE,
        name=name,
        dataset_ref=dataset_name,
        replicas=replicas,
        gpus_per_replica=gpus,
        gpu_product=product,
        placement=PlacementPolicy(
            max_rtt_ms=max_rtt_ms,
            max_throughput_loss=max_loss,
            preferred_regions=tuple(preferred),
            excluded_regions=tuple(excluded),
            objective=objective,
        ),
        data_profile=profile,
        priority=priority,
        created_at=created_at,
    )


def snapshot(
    regions: Iterable[RegionSpec],
    nodes: Iterable[NodeInfo] = (),
    *,
    pods: Iterable[PodUsage] = (),
    datasets: Iterable[DatasetSpec] = (),
    measurements: Iterable[Measurement] = (),
    now: float = NOW,
) -> ClusterSnapshot:
    region_list = list(regions)
    matrix = LatencyMatrix.build(region_list, measurements)
    return ClusterSnapshot.build(region_list, nodes, pods, datasets, matrix, now)
