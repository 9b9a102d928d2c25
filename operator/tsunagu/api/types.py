"""Typed, immutable views of the objects tsunagu reads.

Enum members are spelled like their CamelCase wire values (`ResidencyMode.RemoteAccess`), with
upper-case aliases of the same members for callers who prefer constant style.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tsunagu.api.names import GPU_RESOURCE
from tsunagu.api.scheduling import HostPort, PodRequirements, ResourceAmounts, Taint

# A namespaced object's identity inside the operator: (namespace, name).
JobKey = tuple[str, str]


class ResidencyMode(StrEnum):
    Pinned = "Pinned"
    RemoteAccess = "RemoteAccess"
    Replicated = "Replicated"

    PINNED = Pinned
    REMOTE_ACCESS = RemoteAccess
    REPLICATED = Replicated


class PlacementMode(StrEnum):
    Bind = "Bind"
    Delegate = "Delegate"

    BIND = Bind
    DELEGATE = Delegate


class Objective(StrEnum):
    Fastest = "Fastest"
    Cheapest = "Cheapest"
    Greenest = "Greenest"
    Balanced = "Balanced"

    FASTEST = Fastest
    CHEAPEST = Cheapest
    GREENEST = Greenest
    BALANCED = Balanced


class BreachAction(StrEnum):
    Keep = "Keep"
    Requeue = "Requeue"

    KEEP = Keep
    REQUEUE = Requeue


class UnreachableAction(StrEnum):
    """What a job does when the member cluster its gang runs in cannot be reached."""

    Wait = "Wait"
    Requeue = "Requeue"

    WAIT = Wait
    REQUEUE = Requeue


class LinkKind(StrEnum):
    APN = "APN"
    DedicatedFiber = "DedicatedFiber"
    Internet = "Internet"

    DEDICATED_FIBER = DedicatedFiber
    INTERNET = Internet


@dataclass(frozen=True, slots=True)
class DeclaredLink:
    """A link a Region declares to another region, used when nothing fresher is measured."""

    to: str
    rtt_ms: float
    bandwidth_gbps: float | None
    kind: LinkKind


@dataclass(frozen=True, slots=True)
class GeoPoint:
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class RegionSpec:
    name: str
    prefecture: str
    display_name: str
    gpu_hour_price: float
    carbon_intensity: float
    cordoned: bool
    links: tuple[DeclaredLink, ...] = ()
    location: GeoPoint | None = None
    # When set, nodes belong to the region by these labels instead of REGION_LABEL=name.
    node_selector: tuple[tuple[str, str], ...] | None = None
    # The member cluster (a Cluster object) the region's nodes are in; None: the operator's own.
    cluster: str | None = None
    # Why the region takes no work whatever its nodes, set by the controller (e.g. its member
    # cluster cannot be reached); None: nothing beyond its nodes and cordon.
    unavailable: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A member cluster: how to reach it (a kubeconfig in a Secret of the operator's
    namespace)."""

    name: str
    secret_name: str
    secret_key: str = "kubeconfig"
    create_namespaces: bool = False


@dataclass(frozen=True, slots=True)
class Residency:
    mode: ResidencyMode
    allowed_regions: frozenset[str] = frozenset()
    denied_regions: frozenset[str] = frozenset()
    replica_regions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DatasetAccess:
    pvc_name: str | None = None
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    namespace: str
    name: str
    home_region: str
    residency: Residency
    access: DatasetAccess = DatasetAccess()
    size_gib: float | None = None
    classification: str = ""

    @property
    def key(self) -> JobKey:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class DataProfile:
    """How a job reads its data, for the data-stall throughput model."""

    bytes_per_step: float
    requests_per_step: int
    request_concurrency: int
    step_compute_seconds: float
    prefetch_depth: int


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    mode: PlacementMode = PlacementMode.Bind
    max_rtt_ms: float | None = None
    max_throughput_loss: float | None = None
    preferred_regions: tuple[str, ...] = ()
    excluded_regions: tuple[str, ...] = ()
    objective: Objective = Objective.Balanced
    on_latency_breach: BreachAction = BreachAction.Keep
    breach_tolerance_seconds: int = 120
    # Wait: never started elsewhere while the first copy may still run; Requeue: placed again
    # once the member has been unreachable this long (the copy there is removed when it answers).
    on_cluster_unreachable: UnreachableAction = UnreachableAction.Wait
    cluster_unreachable_grace_seconds: int = 600


@dataclass(frozen=True, slots=True)
class TrainingJobSpec:
    namespace: str
    name: str
    dataset_ref: str | None
    replicas: int
    gpus_per_replica: int
    gpu_product: str | None = None
    placement: PlacementPolicy = PlacementPolicy()
    data_profile: DataProfile | None = None
    priority: int = 0
    backoff_limit: int = 3
    # Unix seconds from metadata.creationTimestamp; 0 when unknown.
    created_at: float = 0.0
    # What each pod of the gang asks of its node, from spec.template and gpusPerReplica; None
    # (a spec built in code without a template) means the GPUs alone.
    requirements: PodRequirements | None = None
    # Jobs of one class share a learned ThroughputProfile (spec.workloadClass).
    workload_class: str | None = None

    @property
    def key(self) -> JobKey:
        return (self.namespace, self.name)

    @property
    def total_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @property
    def pod_requirements(self) -> PodRequirements:
        if self.requirements is not None:
            return self.requirements
        return gpu_only_requirements(self.gpus_per_replica)


_GPU_ONLY: dict[int, PodRequirements] = {}


def gpu_only_requirements(gpus: int) -> PodRequirements:
    """The requirements of a pod that asks for GPUs and nothing else (shared instances)."""
    found = _GPU_ONLY.get(gpus)
    if found is None:
        found = _GPU_ONLY.setdefault(gpus, PodRequirements.of({GPU_RESOURCE: gpus}))
    return found


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    region: str | None
    allocatable_gpus: int
    gpu_product: str | None
    # False when cordoned (spec.unschedulable) or its Ready condition is present and not True.
    schedulable: bool
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[Taint, ...] = ()
    # status.allocatable of every resource (cpu in milli-units); None for a node described by
    # its GPUs alone, which limits nothing else (nodes built in code, simulated topologies).
    allocatable: ResourceAmounts | None = None
    # spec.unschedulable (cordoned), and the Ready condition: a cordoned but ready node still
    # takes pods that tolerate node.kubernetes.io/unschedulable.
    unschedulable: bool = False
    ready: bool = True
    # The member cluster the node is in (its name then qualified, api.members); None: the hub.
    cluster: str | None = None


@dataclass(frozen=True, slots=True)
class PodUsage:
    namespace: str
    name: str
    node_name: str | None
    gpus: int
    # Succeeded or Failed: its GPUs are free again.
    terminal: bool
    # Effective request of every resource (see api.podspec.pod_requests); None: the GPUs alone.
    requests: ResourceAmounts | None = None
    host_ports: tuple[HostPort, ...] = ()
