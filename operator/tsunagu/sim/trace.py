"""Workload traces: what arrives when, how big, how long, and on which data.

A `TraceJob` carries the same `TrainingJobSpec` and `DatasetSpec` the operator parses from the
cluster, plus the two things only a simulator knows: when the job arrives and how long it runs
with its data next to it (`duration_seconds`, at 0 ms RTT). Remote placement stretches that by
the engine's predicted throughput loss.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tsunagu.api.types import (
    BreachAction,
    DataProfile,
    DatasetAccess,
    DatasetSpec,
    Objective,
    PlacementMode,
    PlacementPolicy,
    Residency,
    ResidencyMode,
    TrainingJobSpec,
)
from tsunagu.sim.topology import Topology

NAMESPACE = "sim"


@dataclass(frozen=True)
class TraceJob:
    spec: TrainingJobSpec
    dataset: DatasetSpec | None
    arrival_seconds: float
    duration_seconds: float

    @property
    def key(self) -> tuple[str, str]:
        return self.spec.key

    @property
    def gpus(self) -> int:
        return self.spec.replicas * self.spec.gpus_per_replica


@dataclass(frozen=True)
class Trace:
    jobs: tuple[TraceJob, ...]

    @classmethod
    def of(cls, jobs: Iterable[TraceJob]) -> Trace:
        return cls(tuple(sorted(jobs, key=lambda job: (job.arrival_seconds, job.key))))

    def datasets(self) -> tuple[DatasetSpec, ...]:
        unique = {job.dataset.name: job.dataset for job in self.jobs if job.dataset is not None}
        return tuple(unique[name] for name in sorted(unique))

    def head(self, count: int) -> Trace:
        return Trace(self.jobs[:count])


def placement_policy(
    objective: Objective | None = None,
    max_rtt_ms: float | None = None,
    max_throughput_loss: float | None = None,
    preferred_regions: Sequence[str] = (),
    excluded_regions: Sequence[str] = (),
) -> PlacementPolicy:
    return PlacementPolicy(
        mode=PlacementMode("Bind"),
        max_rtt_ms=max_rtt_ms,
        max_throughput_loss=max_throughput_loss,
        preferred_regions=tuple(preferred_regions),
        excluded_regions=tuple(excluded_regions),
        objective=objective or Objective("Balanced"),
        on_latency_breach=BreachAction("Keep"),
        breach_tolerance_seconds=120,
    )


def make_dataset(
    name: str,
    home: str,
    mode: ResidencyMode,
    allowed: Iterable[str] = (),
    denied: Iterable[str] = (),
    replicas: Iterable[str] = (),
) -> DatasetSpec:
    return DatasetSpec(
        namespace=NAMESPACE,
        name=name,
        home_region=home,
        residency=Residency(
            mode=mode,
            allowed_regions=frozenset(allowed),
            denied_regions=frozenset(denied),
            replica_regions=frozenset(replicas),
        ),
        access=DatasetAccess(pvc_name=name, endpoint=None),
        size_gib=None,
        classification="simulated",
    )


def make_job(
    name: str,
    arrival_seconds: float,
    duration_seconds: float,
    replicas: int,
    gpus_per_replica: int,
    dataset: DatasetSpec | None,
    placement: PlacementPolicy | None = None,
    priority: int = 0,
    gpu_product: str | None = None,
    data_profile: DataProfile | None = None,
    namespace: str = NAMESPACE,
) -> TraceJob:
    spec = TrainingJobSpec(
        namespace=namespace,
        name=name,
        dataset_ref=dataset.name if dataset is not None else None,
        replicas=replicas,
        gpus_per_replica=gpus_per_replica,
        gpu_product=gpu_product,
        placement=placement or placement_policy(),
        data_profile=data_profile,
        priority=priority,
        backoff_limit=0,
        created_at=arrival_seconds,
    )
    if dataset is not None and dataset.namespace != namespace:
        dataset = DatasetSpec(
            namespace=namespace,
            name=dataset.name,
            home_region=dataset.home_region,
            residency=dataset.residency,
            access=dataset.access,
            size_gib=dataset.size_gib,
            classification=dataset.classification,
        )
    return TraceJob(spec, dataset, arrival_seconds, duration_seconds)


@dataclass(frozen=True)
class TraceParameters:
    """The synthetic workload; defaults are explained in docs/simulator.md."""

    jobs: int = 300
    # Offered GPU demand (GPU-seconds per second at 0 ms) over the topology's total GPUs.
    load: float = 0.5
    # Where datasets live: Tokyo and Osaka hold most of the data; the rest is spread over the
    # other regions that have GPUs.
    home_weights: tuple[tuple[str, float], ...] = (("tokyo", 0.55), ("osaka", 0.30))
    residency_weights: tuple[tuple[str, float], ...] = (
        ("Pinned", 0.15),
        ("RemoteAccess", 0.65),
        ("Replicated", 0.20),
    )
    # Share of RemoteAccess datasets that deny one random region (e.g. contract exclusions).
    denied_fraction: float = 0.2
    max_rtt_choices: tuple[float | None, ...] = (None, 10.0, 20.0, 30.0)
    max_loss_choices: tuple[float | None, ...] = (None, 0.10, 0.15, 0.20)
    replica_choices: tuple[tuple[int, float], ...] = ((1, 0.5), (2, 0.3), (4, 0.2))
    gpus_per_replica_choices: tuple[tuple[int, float], ...] = (
        (1, 0.2),
        (2, 0.2),
        (4, 0.3),
        (8, 0.3),
    )
    duration_median_seconds: float = 3600.0
    duration_sigma: float = 0.8
    duration_bounds_seconds: tuple[float, float] = (600.0, 8 * 3600.0)
    high_priority_fraction: float = 0.1


def generate(topology: Topology, parameters: TraceParameters, seed: int) -> Trace:
    """A reproducible synthetic trace: the same topology, parameters and seed give the same jobs."""
    rng = random.Random(seed)
    capacity = topology.gpus_by_region()
    node_sizes = _node_sizes(topology)
    homes, home_weights = _home_distribution(topology, parameters, capacity)
    gpu_regions = sorted(name for name, gpus in capacity.items() if gpus > 0)
    shapes = [_draw_shape(rng, parameters) for _ in range(parameters.jobs)]
    drafts = []
    for index, (replicas, per_replica, duration) in enumerate(shapes):
        home = rng.choices(homes, home_weights)[0]
        replicas, per_replica = _fit_gang(replicas, per_replica, node_sizes[home])
        drafts.append((index, home, replicas, per_replica, duration))
    demand = sum(
        replicas * per_replica * duration for _, _, replicas, per_replica, duration in drafts
    )
    mean_gap = demand / max(1, len(drafts)) / (parameters.load * max(1, topology.total_gpus()))
    clock = 0.0
    jobs = []
    for index, home, replicas, per_replica, duration in drafts:
        clock += rng.expovariate(1.0 / mean_gap)
        name = f"job-{index:04d}"
        dataset = _draw_dataset(rng, parameters, f"data-{index:04d}", home, gpu_regions)
        placement = placement_policy(
            max_rtt_ms=rng.choice(parameters.max_rtt_choices),
            max_throughput_loss=rng.choice(parameters.max_loss_choices),
        )
        priority = 10 if rng.random() < parameters.high_priority_fraction else 0
        jobs.append(
            make_job(
                name,
                round(clock, 3),
                round(duration, 3),
                replicas,
                per_replica,
                dataset,
                placement,
                priority,
            )
        )
    return Trace.of(jobs)


def _node_sizes(topology: Topology) -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = {name: [] for name in topology.region_names()}
    for node in topology.nodes:
        if node.schedulable and node.region in sizes and node.allocatable_gpus > 0:
            sizes[node.region].append(node.allocatable_gpus)
    return sizes


def _home_distribution(
    topology: Topology, parameters: TraceParameters, capacity: dict[str, int]
) -> tuple[list[str], list[float]]:
    weights = {name: weight for name, weight in parameters.home_weights if capacity.get(name, 0)}
    rest = [name for name in topology.region_names() if capacity[name] > 0 and name not in weights]
    leftover = max(0.0, 1.0 - sum(weights.values()))
    for name in rest:
        weights[name] = leftover / len(rest)
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"topology {topology.name} has no region with GPUs")
    names = sorted(weights)
    return names, [weights[name] for name in names]


def _draw_shape(rng: random.Random, parameters: TraceParameters) -> tuple[int, int, float]:
    replicas = _weighted(rng, parameters.replica_choices)
    per_replica = _weighted(rng, parameters.gpus_per_replica_choices)
    low, high = parameters.duration_bounds_seconds
    duration = parameters.duration_median_seconds * math.exp(
        rng.gauss(0.0, parameters.duration_sigma)
    )
    return replicas, per_replica, min(high, max(low, duration))


def _weighted(rng: random.Random, choices: tuple[tuple[int, float], ...]) -> int:
    values = [value for value, _ in choices]
    return rng.choices(values, [weight for _, weight in choices])[0]


def _fit_gang(replicas: int, per_replica: int, home_nodes: Sequence[int]) -> tuple[int, int]:
    """Shrinks a gang until it fits the empty home region, replica by replica on whole nodes.

    Every job must fit its home so that it can always run somewhere eventually.
    """

    def slots(size: int) -> int:
        return sum(free // size for free in home_nodes)

    while per_replica > 1 and slots(per_replica) == 0:
        per_replica //= 2
    while replicas > 1 and slots(per_replica) < replicas:
        replicas //= 2
    return max(1, min(replicas, slots(per_replica))), per_replica


def _draw_dataset(
    rng: random.Random,
    parameters: TraceParameters,
    name: str,
    home: str,
    gpu_regions: Sequence[str],
) -> DatasetSpec:
    modes = [mode for mode, _ in parameters.residency_weights]
    mode = ResidencyMode(rng.choices(modes, [w for _, w in parameters.residency_weights])[0])
    others = [region for region in gpu_regions if region != home]
    if mode == ResidencyMode.Replicated and others:
        return make_dataset(name, home, mode, replicas=[rng.choice(others)])
    if mode == ResidencyMode.RemoteAccess and others and rng.random() < parameters.denied_fraction:
        return make_dataset(name, home, mode, denied=[rng.choice(others)])
    return make_dataset(name, home, mode)
