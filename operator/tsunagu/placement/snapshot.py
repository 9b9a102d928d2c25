"""An immutable picture of the cluster that the engine decides against.

Built once per round from regions, nodes, pods, datasets and the latency matrix. Placing a job
does not mutate it: `with_pods` returns a new snapshot that copies only the regions whose nodes
gave up resources, so a batch of thousands of decisions stays cheap. Which pods fit a node is
decided by `noderules` (kube-scheduler's filters), per group of alike nodes (`nodegroups`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from tsunagu.api.names import GPU_RESOURCE
from tsunagu.api.scheduling import HostPort, PodRequirements, ResourceAmounts
from tsunagu.api.types import DatasetSpec, NodeInfo, PodUsage, RegionSpec, gpu_only_requirements
from tsunagu.placement.datapath import DataPath, nearest_copy
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.nodegroups import (
    Demand,
    GroupTable,
    Usage,
    after,
    best_fit,
    shortfall,
    total_slots,
    usage_of,
)


@dataclass(frozen=True, slots=True)
class RegionCapacity:
    """GPU totals of a region, as Region.status reports them."""

    nodes: int
    ready_nodes: int
    gpu_capacity: int  # on every node of the region, ready or not
    gpu_allocatable: int  # on schedulable nodes
    gpu_allocated: int  # held by pods on schedulable nodes
    gpu_free: int


@dataclass(frozen=True, slots=True)
class _RegionState:
    spec: RegionSpec
    node_names: tuple[str, ...]
    ready_nodes: int
    gpu_capacity: int
    gpu_allocatable: int
    # Nodes that may take a pod: schedulable ones, and cordoned but ready ones (for pods that
    # tolerate the cordon). `members` and `groups` change together in `with_usage`.
    nodes: Mapping[str, NodeInfo]
    members: dict[str, int]  # node → group id
    groups: dict[int, int]  # group id → number of nodes


def _assign_regions(regions: Mapping[str, RegionSpec], nodes: Iterable[NodeInfo]) -> dict[str, str]:
    """Node name → region name.

    A node belongs only to a region of its own cluster (the hub's, or the member's its Region
    names in clusterRef). There, a region with a nodeSelector takes the nodes matching it (first
    such region by name); every other region takes the nodes labelled with its name.
    """
    by_selector = [
        (name, spec.node_selector, spec.cluster)
        for name, spec in sorted(regions.items())
        if spec.node_selector is not None
    ]
    by_label = {name: spec.cluster for name, spec in regions.items() if spec.node_selector is None}
    assignment: dict[str, str] = {}
    for node in nodes:
        labels = dict(node.labels) if by_selector else {}
        chosen = next(
            (
                name
                for name, selector, cluster in by_selector
                if cluster == node.cluster
                and all(labels.get(key) == value for key, value in selector)
            ),
            None,
        )
        if (
            chosen is None
            and node.region is not None
            and node.region in by_label
            and by_label[node.region] == node.cluster
        ):
            chosen = node.region
        if chosen is not None:
            assignment[node.name] = chosen
    return assignment


class ClusterSnapshot:
    """Regions with their free GPUs per node, datasets and latency, at one moment."""

    __slots__ = (
        "_datasets",
        "_node_region",
        "_path_cache",
        "_regions",
        "_table",
        "latency",
        "now",
    )

    def __init__(
        self,
        regions: dict[str, _RegionState],
        node_region: Mapping[str, str],
        datasets: Mapping[tuple[str, str], DatasetSpec],
        latency: LatencyMatrix,
        now: float,
        path_cache: dict[tuple[str, tuple[str, ...]], DataPath | None] | None = None,
        table: GroupTable | None = None,
    ) -> None:
        self._regions = regions
        self._node_region = node_region
        self._datasets = datasets
        self.latency = latency
        self.now = now
        # Latency and time never change between a snapshot and those derived from it, so the
        # paths to data computed for one decision hold for every later one in the batch.
        self._path_cache = {} if path_cache is None else path_cache
        # Node groups and the answers cached per requirement, shared for the same reason.
        self._table = GroupTable() if table is None else table

    @classmethod
    def build(
        cls,
        regions: Iterable[RegionSpec],
        nodes: Iterable[NodeInfo],
        pods: Iterable[PodUsage],
        datasets: Iterable[DatasetSpec],
        latency: LatencyMatrix,
        now: float,
    ) -> ClusterSnapshot:
        specs = {region.name: region for region in regions}
        node_list = list(nodes)
        node_region = _assign_regions(specs, node_list)
        bound: dict[str, list[tuple[ResourceAmounts, tuple[HostPort, ...]]]] = defaultdict(list)
        for pod in pods:
            if pod.node_name is not None and not pod.terminal:
                requests = ((GPU_RESOURCE, pod.gpus),) if pod.requests is None else pod.requests
                bound[pod.node_name].append((requests, pod.host_ports))
        members: dict[str, list[NodeInfo]] = defaultdict(list)
        for node in node_list:
            region_name = node_region.get(node.name)
            if region_name is not None:
                members[region_name].append(node)
        table = GroupTable()
        states = {
            name: cls._region_state(spec, members.get(name, []), bound, table)
            for name, spec in sorted(specs.items())
        }
        return cls(
            states,
            node_region,
            {dataset.key: dataset for dataset in datasets},
            latency,
            now,
            table=table,
        )

    @staticmethod
    def _region_state(
        spec: RegionSpec,
        nodes: list[NodeInfo],
        bound: Mapping[str, list[tuple[ResourceAmounts, tuple[HostPort, ...]]]],
        table: GroupTable,
    ) -> _RegionState:
        eligible: dict[str, NodeInfo] = {}
        group_of: dict[str, int] = {}
        groups: dict[int, int] = {}
        for node in nodes:
            if not node.schedulable and not (node.unschedulable and node.ready):
                continue
            pods = bound.get(node.name)
            group = table.intern_node(node, usage_of(pods) if pods else None)
            eligible[node.name] = node
            group_of[node.name] = group
            groups[group] = groups.get(group, 0) + 1
        return _RegionState(
            spec=spec,
            node_names=tuple(sorted(node.name for node in nodes)),
            ready_nodes=sum(1 for node in nodes if node.schedulable),
            gpu_capacity=sum(node.allocatable_gpus for node in nodes),
            gpu_allocatable=sum(node.allocatable_gpus for node in nodes if node.schedulable),
            nodes=eligible,
            members=group_of,
            groups=groups,
        )

    # Regions -----------------------------------------------------------------------------

    @property
    def region_names(self) -> tuple[str, ...]:
        """Every region, sorted by name."""
        return tuple(self._regions)

    def region(self, name: str) -> RegionSpec:
        return self._regions[name].spec

    def regions(self) -> tuple[RegionSpec, ...]:
        return tuple(state.spec for state in self._regions.values())

    def has_region(self, name: str) -> bool:
        return name in self._regions

    def is_available(self, name: str) -> bool:
        """Takes new work: not cordoned and at least one ready, schedulable node."""
        state = self._regions[name]
        return not state.spec.cordoned and state.ready_nodes > 0

    def capacity(self, name: str) -> RegionCapacity:
        state = self._regions[name]
        states = self._table.states
        free = sum(
            states[group].free_gpus
            for node, group in state.members.items()
            if state.nodes[node].schedulable
        )
        return RegionCapacity(
            nodes=len(state.node_names),
            ready_nodes=state.ready_nodes,
            gpu_capacity=state.gpu_capacity,
            gpu_allocatable=state.gpu_allocatable,
            gpu_allocated=state.gpu_allocatable - free,
            gpu_free=free,
        )

    def nodes_of(self, name: str) -> tuple[str, ...]:
        """Every node that belongs to the region, ready or not, sorted."""
        return self._regions[name].node_names

    # Nodes and gangs ---------------------------------------------------------------------

    def node_region(self, node: str) -> str | None:
        return self._node_region.get(node)

    def node_free_gpus(self, node: str) -> int | None:
        """Free GPUs of a schedulable node; None for a node that takes no work."""
        region = self._node_region.get(node)
        if region is None:
            return None
        state = self._regions[region]
        group = state.members.get(node)
        if group is None or not state.nodes[node].schedulable:
            return None
        return self._table.states[group].free_gpus

    def node_free(self, node: str) -> Mapping[str, int] | None:
        """Every resource free on a node that may take pods (cpu in milli-units)."""
        region = self._node_region.get(node)
        if region is None:
            return None
        group = self._regions[region].members.get(node)
        return None if group is None else self._table.states[group].free

    def demand(self, requirements: PodRequirements, gpu_product: str | None) -> Demand:
        """The key under which answers for one pod requirement are cached across the batch."""
        return self._table.demand(requirements, gpu_product)

    def gang_slots(self, region: str, demand: Demand) -> int:
        """How many pods of the demand the region's nodes can still take, under every rule."""
        state = self._regions[region]
        return total_slots(self._table, demand, state.groups, state.members, state.nodes)

    def pack_gang(self, region: str, demand: Demand, replicas: int) -> tuple[str, ...] | None:
        """Node per rank by best-fit packing, or None if the gang does not fit."""
        state = self._regions[region]
        return best_fit(self._table, demand, state.members, state.nodes, replicas)

    def shortfall(self, region: str, demand: Demand) -> tuple[str, ...]:
        """Why the region's nodes that take no pod of the demand take none (see nodegroups)."""
        state = self._regions[region]
        cached = demand.shortfalls.get(region)
        if cached is not None and cached[0] is state.groups:
            return cached[1]
        reasons = shortfall(self._table, demand, state.groups, state.members, state.nodes)
        demand.shortfalls[region] = (state.groups, reasons)
        return reasons

    def replica_slots(self, region: str, gpu_product: str | None, gpus_per_replica: int) -> int:
        """How many replicas needing GPUs alone the region's nodes (of that product) can hold."""
        return self.gang_slots(
            region, self.demand(gpu_only_requirements(gpus_per_replica), gpu_product)
        )

    def pack(
        self, region: str, gpu_product: str | None, replicas: int, gpus_per_replica: int
    ) -> tuple[str, ...] | None:
        """Node per rank for replicas needing GPUs alone, or None if the gang does not fit."""
        demand = self.demand(gpu_only_requirements(gpus_per_replica), gpu_product)
        return self.pack_gang(region, demand, replicas)

    def with_allocations(self, allocations: Mapping[str, int]) -> ClusterSnapshot:
        """A snapshot in which the named nodes have given up that many more GPUs (and nothing
        else: see `with_pods` for pods with every resource).

        Nodes that are unknown or take no work are ignored; a node never goes below 0 free.
        """
        return self.with_usage(
            {node: Usage({GPU_RESOURCE: gpus}) for node, gpus in allocations.items() if gpus}
        )

    def with_pods(self, placed: Iterable[tuple[str, PodRequirements]]) -> ClusterSnapshot:
        """A snapshot in which each (node, requirements) pod has been bound: its requests,
        one of the node's pods and its host ports are taken."""
        by_node: dict[str, list[tuple[ResourceAmounts, tuple[HostPort, ...]]]] = defaultdict(list)
        for node, requirements in placed:
            by_node[node].append((requirements.requests, requirements.host_ports))
        return self.with_usage({node: usage_of(pods) for node, pods in by_node.items()})

    def with_usage(self, usage: Mapping[str, Usage]) -> ClusterSnapshot:
        """A snapshot in which the named nodes have given up that usage more.

        Only the regions touched are copied; unknown nodes and nodes that take no work are
        ignored.
        """
        touched: dict[str, dict[str, Usage]] = defaultdict(dict)
        for node, taken in usage.items():
            region = self._node_region.get(node)
            if region is not None and node in self._regions[region].members:
                touched[region][node] = taken
        if not touched:
            return self
        table = self._table
        regions = dict(self._regions)
        for region_name, taken_by_node in touched.items():
            state = regions[region_name]
            members = dict(state.members)
            groups = dict(state.groups)
            for node, taken in taken_by_node.items():
                before = members[node]
                group = table.intern(after(table.states[before], taken))
                members[node] = group
                remaining = groups[before] - 1
                if remaining:
                    groups[before] = remaining
                else:
                    del groups[before]
                groups[group] = groups.get(group, 0) + 1
            regions[region_name] = replace(state, members=members, groups=groups)
        return ClusterSnapshot(
            regions,
            self._node_region,
            self._datasets,
            self.latency,
            self.now,
            self._path_cache,
            table,
        )

    # Latency -----------------------------------------------------------------------------

    def data_path(self, region: str, sites: tuple[str, ...]) -> DataPath | None:
        """The path from `region` to the nearest of `sites` (see `datapath.nearest_copy`)."""
        key = (region, sites)
        try:
            return self._path_cache[key]
        except KeyError:
            path = nearest_copy(self.latency, region, sites, self.now)
            self._path_cache[key] = path
            return path

    # Datasets ----------------------------------------------------------------------------

    def dataset(self, namespace: str, name: str) -> DatasetSpec | None:
        return self._datasets.get((namespace, name))

    def datasets(self) -> tuple[DatasetSpec, ...]:
        return tuple(self._datasets[key] for key in sorted(self._datasets))
