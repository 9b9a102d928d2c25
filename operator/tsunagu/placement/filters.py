"""The region filters of DESIGN.md §3, one function per `Reason`, in the order they run.

A filter reads the job (`JobContext`), the region and the path to the data the engine found
there, and returns the message of its rejection, or None when the region passes. `FILTERS` is
the order: adding a filter is adding a function and a row (and its Reason to
`api.conditions.FILTER_ORDER`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tsunagu.api.conditions import FILTER_ORDER, Reason
from tsunagu.api.types import DatasetSpec, Objective, TrainingJobSpec
from tsunagu.placement.datapath import DataPath
from tsunagu.placement.nodegroups import Demand
from tsunagu.placement.residency import residency_allows
from tsunagu.placement.scoring import DEFAULT_OBJECTIVE_WEIGHTS, ObjectiveWeights
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import FittedModel, ThroughputModel, choose_model

# Budgets compare floats that went through arithmetic; this keeps 15.000000000000002 within 15.
BUDGET_TOLERANCE = 1e-9
# Shortfall reasons quoted in an InsufficientCapacity message, most common first.
_MAX_SHORTFALL_REASONS = 3


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # Budgets for jobs that leave theirs unset (None: unset budgets do not constrain).
    default_max_rtt_ms: float | None = None
    default_max_throughput_loss: float | None = None
    # Link bandwidth the data-stall model assumes where a link declares none.
    default_bandwidth_gbps: float = 10.0
    preferred_bonus: float = 0.1
    objective_weights: tuple[tuple[Objective, ObjectiveWeights], ...] = DEFAULT_OBJECTIVE_WEIGHTS
    # What was learned per workload class (placement/calibration); only trusted fits are used.
    fitted_models: Mapping[str, FittedModel] = field(default_factory=dict)

    def weights_for(self, objective: Objective) -> ObjectiveWeights:
        for candidate, weights in self.objective_weights:
            if candidate == objective:
                return weights
        return ObjectiveWeights(time=1.0, price=1.0, carbon=1.0)

    def max_rtt_ms(self, job: TrainingJobSpec) -> float | None:
        own = job.placement.max_rtt_ms
        return own if own is not None else self.default_max_rtt_ms

    def max_throughput_loss(self, job: TrainingJobSpec) -> float | None:
        own = job.placement.max_throughput_loss
        return own if own is not None else self.default_max_throughput_loss

    def throughput_model(self, job: TrainingJobSpec) -> ThroughputModel:
        return choose_model(job.data_profile, job.workload_class, self.fitted_models)


@dataclass(frozen=True, slots=True)
class JobContext:
    """One job, as every filter may read it; built once per decision."""

    job: TrainingJobSpec
    dataset: DatasetSpec | None
    sites: tuple[str, ...]  # where copies of the dataset are
    snapshot: ClusterSnapshot
    settings: EngineSettings
    demand: Demand  # one gang pod's requirements, as the snapshot caches them
    model: ThroughputModel  # how this job's throughput suffers from RTT


# (job, region, path to the nearest copy of the data or None, predicted throughput loss or None
# when the path is unknown) → the message of the rejection, or None when the region passes.
Filter = Callable[[JobContext, str, DataPath | None, float | None], str | None]


def format_loss(loss: float) -> str:
    return f"{loss:.1%}"


def region_unavailable(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    spec = c.snapshot.region(region)
    if spec.unavailable is not None:
        return spec.unavailable
    # A region whose nodes are all cordoned takes no new work, even from pods that tolerate
    # the cordon: cordoning every node is how a region is drained.
    if spec.cordoned:
        return "region is cordoned"
    if not c.snapshot.is_available(region):
        return "region has no ready nodes"
    return None


def region_excluded(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    if region in c.job.placement.excluded_regions:
        return "listed in spec.placement.excludedRegions"
    return None


def data_residency(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    if c.dataset is None or residency_allows(c.dataset, region):
        return None
    return (
        f"dataset {c.dataset.namespace}/{c.dataset.name} ({c.dataset.residency.mode}) "
        f"does not allow compute here"
    )


def latency_unknown(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    if c.dataset is None or (path is not None and loss is not None):
        return None
    return f"no fresh measurement or declared link to {', '.join(c.sites)}"


def latency_budget(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    max_rtt = c.settings.max_rtt_ms(c.job)
    if path is None or max_rtt is None or path.rtt_ms <= max_rtt + BUDGET_TOLERANCE:
        return None
    return f"RTT {path.rtt_ms:.1f} ms to {path.site} is over maxRttMs {max_rtt:g}"


def throughput_loss_budget(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    max_loss = c.settings.max_throughput_loss(c.job)
    if c.dataset is None or loss is None or max_loss is None:
        return None
    if loss <= max_loss + BUDGET_TOLERANCE:
        return None
    return (
        f"predicted throughput loss {format_loss(loss)} is over maxThroughputLoss "
        f"{format_loss(max_loss)}"
    )


def insufficient_capacity(
    c: JobContext, region: str, path: DataPath | None, loss: float | None
) -> str | None:
    """The gang fits when the region's nodes hold `replicas` pods under every node rule."""
    job = c.job
    slots = c.snapshot.gang_slots(region, c.demand)
    if slots >= job.replicas:
        return None
    product = f" of {job.gpu_product}" if job.gpu_product else ""
    message = (
        f"gang of {job.replicas} × {job.gpus_per_replica} GPUs{product} does not fit: "
        f"room for {slots} of {job.replicas} replicas"
    )
    reasons = c.snapshot.shortfall(region, c.demand)[:_MAX_SHORTFALL_REASONS]
    return f"{message} ({'; '.join(reasons)})" if reasons else message


FILTERS: tuple[tuple[Reason, Filter], ...] = (
    (Reason.RegionUnavailable, region_unavailable),
    (Reason.RegionExcluded, region_excluded),
    (Reason.DataResidency, data_residency),
    (Reason.LatencyUnknown, latency_unknown),
    (Reason.LatencyBudget, latency_budget),
    (Reason.ThroughputLossBudget, throughput_loss_budget),
    (Reason.InsufficientCapacity, insufficient_capacity),
)

if tuple(reason for reason, _ in FILTERS) != FILTER_ORDER:  # pragma: no cover - import guard
    raise AssertionError("placement.filters.FILTERS must run in api.conditions.FILTER_ORDER")
