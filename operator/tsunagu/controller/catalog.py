"""The hub's own objects, the ones no cluster owns: Regions, Datasets, ThroughputProfiles and
the latency measurements between regions, with the latency matrix built from them.

The matrix is rebuilt only when a Region or the measurements change (it judges staleness at the
moment it is asked, not when it is built), and the decision loop, the latency-budget monitor and
Region status all read the same one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tsunagu.api.parse import SpecError, parse_dataset, parse_region
from tsunagu.api.profiles import ThroughputProfile, parse_throughput_profile
from tsunagu.api.types import DatasetSpec, JobKey, NodeInfo, PodUsage, RegionSpec
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.placement.calibration import fitted_models, with_defaults
from tsunagu.placement.engine import EngineSettings
from tsunagu.placement.latency import DEFAULT_STALENESS_SECONDS, LatencyMatrix, Measurement
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import FittedModel

logger = logging.getLogger(__name__)

# The verdict of a member whose regions take work (lifecycle.members).
MEMBER_CONNECTED = "Connected"


@dataclass(frozen=True, slots=True)
class DatasetObject:
    """What the dataset guard needs of a Dataset's metadata."""

    uid: str | None
    resource_version: str | None
    finalizers: tuple[str, ...]
    deleting: bool


class Catalog:
    def __init__(
        self,
        staleness_seconds: float = DEFAULT_STALENESS_SECONDS,
        declared_fallback: bool = False,
        default_profiles_namespace: str = "",
    ) -> None:
        self.staleness_seconds = staleness_seconds
        self.declared_fallback = declared_fallback
        # Its ThroughputProfiles apply to every namespace without a trusted one of the class
        # ("": no cluster-wide defaults).
        self.default_profiles_namespace = default_profiles_namespace
        self.regions: dict[str, RegionSpec] = {}
        # Member clusters by name → (reason, message): why their regions take no work now
        # (see lifecycle.members.MemberClusters).
        self.member_verdicts: dict[str, tuple[str, str]] = {}
        self.datasets: dict[JobKey, DatasetSpec] = {}
        self.dataset_objects: dict[JobKey, DatasetObject] = {}
        self.profiles: dict[JobKey, ThroughputProfile] = {}
        # Engine settings per namespace with the models learned there, built when asked after
        # a profile changed; the default profiles' fits, refitted once for all namespaces.
        self._engines: dict[str, tuple[EngineSettings, EngineSettings]] = {}
        self._default_models: dict[str, FittedModel] | None = None
        # The latest measurement of every pair ever measured: a pair the source stops reporting
        # (its probe gone) keeps its last one, which then goes stale, rather than vanishing and
        # leaving its declared link to stand in silently.
        self._latest: dict[tuple[str, str], Measurement] = {}
        self._matrix: LatencyMatrix | None = None

    # --- regions ---------------------------------------------------------------------------
    def upsert_region(self, body: Mapping[str, Any]) -> RegionSpec | None:
        """Records a Region; one that does not parse is forgotten (and logged)."""
        try:
            region = parse_region(body)
        except SpecError as error:
            logger.warning("ignoring region: %s", error)
            self.delete_region((body.get("metadata") or {}).get("name", ""))
            return None
        if self.regions.get(region.name) != region:
            self.regions[region.name] = region
            self._matrix = None
        return region

    def delete_region(self, name: str) -> None:
        if self.regions.pop(name, None) is not None:
            for pair in [pair for pair in self._latest if name in pair]:
                del self._latest[pair]
            self._matrix = None

    # --- datasets --------------------------------------------------------------------------
    def upsert_dataset(self, body: Mapping[str, Any]) -> DatasetSpec:
        """Records a Dataset; raises SpecError (and forgets it) when it does not parse."""
        metadata = body.get("metadata") or {}
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        try:
            dataset = parse_dataset(body)
        except SpecError:
            self.datasets.pop(key, None)
            self.dataset_objects.pop(key, None)
            raise
        self.datasets[key] = dataset
        self.dataset_objects[key] = DatasetObject(
            uid=metadata.get("uid"),
            resource_version=metadata.get("resourceVersion"),
            finalizers=tuple(metadata.get("finalizers") or ()),
            deleting=bool(metadata.get("deletionTimestamp")),
        )
        return dataset

    def delete_dataset(self, namespace: str, name: str) -> None:
        self.datasets.pop((namespace, name), None)
        self.dataset_objects.pop((namespace, name), None)

    def dataset_deleting(self, key: JobKey) -> bool:
        known = self.dataset_objects.get(key)
        return known is not None and known.deleting

    def dataset(self, namespace: str, name: str | None) -> DatasetSpec | None:
        return self.datasets.get((namespace, name)) if name else None

    # --- what was learned of each workload class ------------------------------------------
    def upsert_profile(self, body: Mapping[str, Any]) -> None:
        """Records a ThroughputProfile; one that does not parse is forgotten (and logged)."""
        metadata = body.get("metadata") or {}
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        try:
            self.profiles[key] = parse_throughput_profile(body)
        except SpecError as error:
            logger.warning("ignoring throughput profile: %s", error)
            self.profiles.pop(key, None)
        self._profiles_changed(key[0])

    def delete_profile(self, namespace: str, name: str) -> None:
        self.profiles.pop((namespace, name), None)
        self._profiles_changed(namespace)

    def _profiles_changed(self, namespace: str) -> None:
        if namespace == self.default_profiles_namespace:
            self._default_models = None
            self._engines.clear()  # every namespace may use a default
        else:
            self._engines.pop(namespace, None)

    def profile_for(self, namespace: str, workload_class: str) -> ThroughputProfile | None:
        """The profile of a class in a namespace that the engine's fit comes from: of several,
        the last by name (as `fitted_models` lets a later one win)."""
        found = None
        for profile in self._profiles_of(namespace):
            if profile.workload_class == workload_class:
                found = profile
        return found

    def engine_for(self, namespace: str, base: EngineSettings) -> EngineSettings:
        """`base` with the models of the namespace's own ThroughputProfiles and, for a class
        without a trusted one there, the trusted model of the cluster-wide default profile
        (`calibration.with_defaults`)."""
        cached = self._engines.get(namespace)
        if cached is not None and cached[0] is base:
            return cached[1]
        default = self.default_profiles_namespace
        if self._default_models is None:
            self._default_models = fitted_models(self._profiles_of(default))
        own = fitted_models(self._profiles_of(namespace))
        models = with_defaults(own, self._default_models, namespace, default)
        engine = replace(base, fitted_models=models) if models else base
        self._engines[namespace] = (base, engine)
        return engine

    def _profiles_of(self, namespace: str) -> list[ThroughputProfile]:
        return [p for (ns, _), p in sorted(self.profiles.items()) if ns == namespace]

    # --- latency ---------------------------------------------------------------------------
    @property
    def measurements(self) -> tuple[Measurement, ...]:
        return tuple(self._latest[pair] for pair in sorted(self._latest))

    def take_measurements(self, measurements: Iterable[Measurement]) -> None:
        """Keeps each pair's newest measurement, from this refresh or an earlier one."""
        changed = False
        for measurement in measurements:
            pair = (measurement.source_region, measurement.target_region)
            known = self._latest.get(pair)
            newer = known is None or measurement.observed_at >= known.observed_at
            if newer and known != measurement:
                self._latest[pair] = measurement
                changed = True
        if changed:
            self._matrix = None

    def latency(self) -> LatencyMatrix:
        if self._matrix is None:
            self._matrix = LatencyMatrix.build(
                self.regions.values(),
                self._latest.values(),
                staleness_seconds=self.staleness_seconds,
                declared_fallback=self.declared_fallback,
            )
        return self._matrix

    # --- the engine's input ----------------------------------------------------------------
    def snapshot(
        self, clusters: Iterable[ClusterView], now: float, assumed: Iterable[PodUsage] = ()
    ) -> ClusterSnapshot:
        """An immutable snapshot of every region over the nodes and pods of `clusters`;
        `assumed` pods count as bound although no watch has shown it yet."""
        nodes: list[NodeInfo] = []
        pods: list[PodUsage] = []
        for view in clusters:
            nodes.extend(view.nodes.values())
            pods.extend(view.pods.values())
        # A pod's name is unique within its cluster only; its node says which cluster it is in.
        seen = {(p.namespace, p.name, p.node_name) for p in pods if p.node_name}
        pods.extend(p for p in assumed if (p.namespace, p.name, p.node_name) not in seen)
        # A Dataset being deleted takes no new jobs; those running on it keep it (finalizer).
        datasets = [d for key, d in self.datasets.items() if not self.dataset_deleting(key)]
        return ClusterSnapshot.build(
            self.served_regions(), nodes, pods, datasets, self.latency(), now
        )

    def served_regions(self) -> list[RegionSpec]:
        """The Regions as the engine sees them: a region in a member cluster that cannot be used
        (unknown, unreachable, its kubeconfig wrong) says why it takes no work."""
        regions = []
        for region in self.regions.values():
            if region.cluster is not None:
                reason, message = self.member_verdict(region.cluster)
                if reason != MEMBER_CONNECTED:
                    region = replace(region, unavailable=message)
            regions.append(region)
        return regions

    def member_verdict(self, cluster: str) -> tuple[str, str]:
        """(reason, message) of a member cluster's regions: `Connected` when they take work."""
        return self.member_verdicts.get(
            cluster, ("ClusterMissing", f"cluster {cluster}: no Cluster object of that name")
        )
