"""An immutable picture of the cluster that the engine decides against.

Built once per round from regions, nodes, pods, datasets and the latency matrix. Placing a job
does not mutate it: `with_allocations` returns a new snapshot that copies only the regions whose
nodes lost GPUs, so a batch of thousands of decisions stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from tsunagu.api.types import DatasetSpec, NodeInfo, PodUsage, RegionSpec
from tsunagu.placement.capacity import add_to_histogram, pack_gang, replica_slots
from tsunagu.placement.datapath import DataPath, nearest_copy
from tsunagu.placement.latency import LatencyMatrix


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
    # Schedulable nodes only; these three change together in `with_allocations`.
    free: dict[str, int]
    product_of: dict[str, str | None]
    histograms: dict[str | None, dict[int, int]]  # by GPU product
    total_histogram: dict[int, int]

    def histogram(self, product: str | None) -> Mapping[int, int]:
        if product is None:
            return self.total_histogram
        return self.histograms.get(product, {})


def _assign_regions(regions: Mapping[str, RegionSpec], nodes: Iterable[NodeInfo]) -> dict[str, str]:
    """Node name → region name.

    A region with a nodeSelector takes the nodes matching it (first such region by name); every
    other region takes the nodes labelled with its name.
    """
    by_selector = [
        (name, spec.node_selector)
        for name, spec in sorted(regions.items())
        if spec.node_selector is not None
    ]
    by_label = {name for name, spec in regions.items() if spec.node_selector is None}
    assignment: dict[str, str] = {}
    for node in nodes:
        labels = dict(node.labels) if by_selector else {}
        chosen = next(
            (
                name
                for name, selector in by_selector
                if all(labels.get(key) == value for key, value in selector)
            ),
            None,
        )
        if chosen is None and node.region in by_label:
            chosen = node.region
        if chosen is not None:
            assignment[node.name] = chosen
    return assignment


class ClusterSnapshot:
    """Regions with their free GPUs per node, datasets and latency, at one moment."""

    __slots__ = ("_datasets", "_node_region", "_path_cache", "_regions", "latency", "now")

    def __init__(
        self,
        regions: dict[str, _RegionState],
        node_region: Mapping[str, str],
        datasets: Mapping[tuple[str, str], DatasetSpec],
        latency: LatencyMatrix,
        now: float,
        path_cache: dict[tuple[str, tuple[str, ...]], DataPath | None] | None = None,
    ) -> None:
        self._regions = regions
        self._node_region = node_region
        self._datasets = datasets
        self.latency = latency
        self.now = now
        # Latency and time never change between a snapshot and those derived from it, so the
        # paths to data computed for one decision hold for every later one in the batch.
        self._path_cache = {} if path_cache is None else path_cache

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
        used: dict[str, int] = defaultdict(int)
        for pod in pods:
            if pod.node_name is not None and not pod.terminal:
                used[pod.node_name] += pod.gpus
        members: dict[str, list[NodeInfo]] = defaultdict(list)
        for node in node_list:
            region_name = node_region.get(node.name)
            if region_name is not None:
                members[region_name].append(node)
        states = {
            name: cls._region_state(spec, members.get(name, []), used)
            for name, spec in sorted(specs.items())
        }
        return cls(
            states,
            node_region,
            {dataset.key: dataset for dataset in datasets},
            latency,
            now,
        )

    @staticmethod
    def _region_state(
        spec: RegionSpec, nodes: list[NodeInfo], used: Mapping[str, int]
    ) -> _RegionState:
        free: dict[str, int] = {}
        product_of: dict[str, str | None] = {}
        histograms: dict[str | None, dict[int, int]] = defaultdict(dict)
        total_histogram: dict[int, int] = {}
        for node in nodes:
            if not node.schedulable:
                continue
            node_free = max(node.allocatable_gpus - used.get(node.name, 0), 0)
            free[node.name] = node_free
            product_of[node.name] = node.gpu_product
            add_to_histogram(histograms[node.gpu_product], node_free, 1)
            add_to_histogram(total_histogram, node_free, 1)
        return _RegionState(
            spec=spec,
            node_names=tuple(sorted(node.name for node in nodes)),
            ready_nodes=len(free),
            gpu_capacity=sum(node.allocatable_gpus for node in nodes),
            gpu_allocatable=sum(node.allocatable_gpus for node in nodes if node.schedulable),
            free=free,
            product_of=product_of,
            histograms=dict(histograms),
            total_histogram=total_histogram,
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
        free = sum(state.free.values())
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
        return self._regions[region].free.get(node)

    def replica_slots(self, region: str, gpu_product: str | None, gpus_per_replica: int) -> int:
        """How many replicas of that size the region's nodes (of that product) can still hold."""
        histogram = self._regions[region].histogram(gpu_product)
        return replica_slots(histogram, gpus_per_replica)

    def pack(
        self, region: str, gpu_product: str | None, replicas: int, gpus_per_replica: int
    ) -> tuple[str, ...] | None:
        """Node per rank by best-fit packing, or None if the gang does not fit."""
        state = self._regions[region]
        candidates = (
            state.free.items()
            if gpu_product is None
            else (
                (name, free)
                for name, free in state.free.items()
                if state.product_of[name] == gpu_product
            )
        )
        return pack_gang(candidates, replicas, gpus_per_replica)

    def with_allocations(self, allocations: Mapping[str, int]) -> ClusterSnapshot:
        """A snapshot in which the named nodes have given up that many more GPUs.

        Nodes that are unknown or take no work are ignored; a node never goes below 0 free.
        """
        touched: dict[str, dict[str, int]] = defaultdict(dict)
        for node, gpus in allocations.items():
            region = self._node_region.get(node)
            if region is not None and node in self._regions[region].free and gpus:
                touched[region][node] = touched[region].get(node, 0) + gpus
        if not touched:
            return self
        regions = dict(self._regions)
        for region_name, taken in touched.items():
            state = regions[region_name]
            free = dict(state.free)
            histograms = dict(state.histograms)
            total_histogram = dict(state.total_histogram)
            copied_products: set[str | None] = set()
            for node, gpus in taken.items():
                before = free[node]
                after = max(before - gpus, 0)
                free[node] = after
                product = state.product_of[node]
                if product not in copied_products:
                    histograms[product] = dict(histograms[product])
                    copied_products.add(product)
                for histogram in (histograms[product], total_histogram):
                    add_to_histogram(histogram, before, -1)
                    add_to_histogram(histogram, after, 1)
            regions[region_name] = replace(
                state, free=free, histograms=histograms, total_histogram=total_histogram
            )
        return ClusterSnapshot(
            regions, self._node_region, self._datasets, self.latency, self.now, self._path_cache
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
