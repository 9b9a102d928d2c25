"""Parsing of custom-resource dicts (and of v1 Node / v1 Pod) into typed, immutable specs.

Every function takes the plain dict of a Kubernetes object and either returns its spec or raises
`SpecError` naming the object and the field. Defaults here are the ones the CRDs document.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tsunagu.api.fields import UNNAMED, Fields, SpecError
from tsunagu.api.kube import parse_node, parse_pod
from tsunagu.api.names import (
    CLUSTER_KIND,
    DATASET_KIND,
    GPU_RESOURCE,
    REGION_KIND,
    TRAINING_JOB_KIND,
)
from tsunagu.api.podspec import pod_requirements
from tsunagu.api.scheduling import PodRequirements
from tsunagu.api.types import (
    BreachAction,
    ClusterSpec,
    DataProfile,
    DatasetAccess,
    DatasetSpec,
    DeclaredLink,
    GeoPoint,
    LinkKind,
    Objective,
    PlacementMode,
    PlacementPolicy,
    RegionSpec,
    Residency,
    ResidencyMode,
    TrainingJobSpec,
    UnreachableAction,
)

__all__ = [
    "SpecError",
    "object_label",
    "parse_dataset",
    "parse_node",
    "parse_pod",
    "parse_region",
    "parse_training_job",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_BREACH_TOLERANCE_SECONDS = 120
DEFAULT_CLUSTER_UNREACHABLE_GRACE_SECONDS = 600
DEFAULT_BACKOFF_LIMIT = 3


def object_label(obj: object, *, namespaced: bool) -> str:
    """`namespace/name` (or `name`) of an object for messages, `<unnamed>` when it has none."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict):
        return UNNAMED
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return UNNAMED
    if not namespaced:
        return name
    namespace = metadata.get("namespace")
    if not isinstance(namespace, str) or not namespace:
        namespace = DEFAULT_NAMESPACE
    return f"{namespace}/{name}"


def object_root(obj: object, kind: str, *, namespaced: bool) -> tuple[Fields, str, str]:
    """The object's root fields (named for errors), its namespace and its name."""
    root = Fields.root(obj, kind)
    metadata = root.required_child("metadata")
    name = metadata.required_text("name")
    namespace = ""
    if namespaced:
        namespace = metadata.text("namespace") or DEFAULT_NAMESPACE
    root = root.renamed(f"{namespace}/{name}" if namespaced else name)
    declared_kind = root.raw("kind")
    if declared_kind is not None and declared_kind != kind:
        raise root.error("kind", f"must be {kind} (got {declared_kind!r})")
    return root, namespace, name


def created_at(root: Fields) -> float:
    metadata = root.child_or_empty("metadata")
    value = metadata.raw("creationTimestamp")
    if value is None:
        return 0.0
    # YAML loaders turn unquoted timestamps into datetime objects already.
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise metadata.error("creationTimestamp", "must be an RFC 3339 time") from None
    if not isinstance(value, datetime):
        raise metadata.error("creationTimestamp", "must be an RFC 3339 time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def parse_region(obj: object) -> RegionSpec:
    root, _, name = object_root(obj, REGION_KIND, namespaced=False)
    spec = root.child_or_empty("spec")
    links = tuple(
        DeclaredLink(
            to=link.required_text("to"),
            rtt_ms=link.required_number("rttMs", minimum=0),
            bandwidth_gbps=link.positive_number("bandwidthGbps"),
            kind=link.enum("kind", LinkKind, LinkKind.Internet),
        )
        for link in spec.maps("links")
    )
    seen: set[str] = set()
    for index, link in enumerate(links):
        if link.to == name:
            raise spec.error(f"links[{index}].to", "must name another region, not this one")
        if link.to in seen:
            raise spec.error(f"links[{index}].to", f"declares a second link to {link.to}")
        seen.add(link.to)
    location = None
    location_fields = spec.child("location")
    if location_fields is not None:
        location = GeoPoint(
            latitude=location_fields.required_number("latitude", minimum=-90, maximum=90),
            longitude=location_fields.required_number("longitude", minimum=-180, maximum=180),
        )
    selector = spec.string_map("nodeSelector")
    if selector is not None and not selector:
        raise spec.error("nodeSelector", "must hold at least one label when set")
    return RegionSpec(
        name=name,
        prefecture=spec.text("prefecture") or "",
        display_name=spec.text("displayName") or name,
        gpu_hour_price=spec.number("gpuHourPrice", minimum=0) or 0.0,
        carbon_intensity=spec.number("carbonIntensity", minimum=0) or 0.0,
        cordoned=spec.boolean("cordoned", False),
        links=links,
        location=location,
        node_selector=tuple(sorted(selector.items())) if selector is not None else None,
        cluster=spec.child_or_empty("clusterRef").text("name"),
    )


def parse_cluster(obj: object) -> ClusterSpec:
    root, _, name = object_root(obj, CLUSTER_KIND, namespaced=False)
    spec = root.required_child("spec")
    secret = spec.required_child("kubeconfigSecretRef")
    return ClusterSpec(
        name=name,
        secret_name=secret.required_text("name"),
        secret_key=secret.text("key") or "kubeconfig",
        create_namespaces=spec.boolean("createNamespaces", False),
    )


def _residency(spec: Fields) -> Residency:
    fields = spec.child_or_empty("residency")
    # Pinned is the safe default: data whose rules were not written down stays home.
    mode = fields.enum("mode", ResidencyMode, ResidencyMode.Pinned)
    allowed = frozenset(fields.string_list("allowedRegions"))
    denied = frozenset(fields.string_list("deniedRegions"))
    replicas = frozenset(fields.string_list("replicaRegions"))
    if replicas and mode is not ResidencyMode.Replicated:
        raise fields.error("replicaRegions", "may only be set when mode is Replicated")
    if not replicas and mode is ResidencyMode.Replicated:
        raise fields.error("replicaRegions", "mode Replicated needs at least one region")
    if allowed and mode is not ResidencyMode.RemoteAccess:
        raise fields.error("allowedRegions", "may only be set when mode is RemoteAccess")
    if denied and mode is not ResidencyMode.RemoteAccess:
        raise fields.error("deniedRegions", "may only be set when mode is RemoteAccess")
    if allowed & denied:
        both = ", ".join(sorted(allowed & denied))
        raise fields.error("deniedRegions", f"names regions also in allowedRegions: {both}")
    return Residency(
        mode=mode, allowed_regions=allowed, denied_regions=denied, replica_regions=replicas
    )


def _access(spec: Fields) -> DatasetAccess:
    fields = spec.child("access")
    if fields is None:
        return DatasetAccess()
    pvc_name = fields.text("pvcName")
    endpoint = fields.text("endpoint")
    if (pvc_name is None) == (endpoint is None):
        raise fields.error("pvcName", "exactly one of pvcName or endpoint must be set")
    return DatasetAccess(pvc_name=pvc_name, endpoint=endpoint)


def parse_dataset(obj: object) -> DatasetSpec:
    root, namespace, name = object_root(obj, DATASET_KIND, namespaced=True)
    spec = root.required_child("spec")
    home = spec.required_text("homeRegion")
    residency = _residency(spec)
    if home in residency.denied_regions:
        raise spec.error(
            "residency.deniedRegions", f"cannot hold the home region {home}: it is always allowed"
        )
    return DatasetSpec(
        namespace=namespace,
        name=name,
        home_region=home,
        residency=residency,
        access=_access(spec),
        size_gib=spec.number("sizeGiB", minimum=0),
        classification=spec.text("classification", allow_empty=True) or "",
    )


def _placement(spec: Fields) -> PlacementPolicy:
    fields = spec.child_or_empty("placement")
    tolerance = fields.integer("breachToleranceSeconds", minimum=0)
    grace = fields.integer("clusterUnreachableGraceSeconds", minimum=0)
    return PlacementPolicy(
        mode=fields.enum("mode", PlacementMode, PlacementMode.Bind),
        max_rtt_ms=fields.number("maxRttMs", minimum=0),
        max_throughput_loss=fields.number("maxThroughputLoss", minimum=0, maximum=1),
        preferred_regions=fields.string_list("preferredRegions"),
        excluded_regions=fields.string_list("excludedRegions"),
        objective=fields.enum("objective", Objective, Objective.Balanced),
        on_latency_breach=fields.enum("onLatencyBreach", BreachAction, BreachAction.Keep),
        breach_tolerance_seconds=(
            DEFAULT_BREACH_TOLERANCE_SECONDS if tolerance is None else tolerance
        ),
        on_cluster_unreachable=fields.enum(
            "onClusterUnreachable", UnreachableAction, UnreachableAction.Wait
        ),
        cluster_unreachable_grace_seconds=(
            DEFAULT_CLUSTER_UNREACHABLE_GRACE_SECONDS if grace is None else grace
        ),
    )


def _data_profile(spec: Fields) -> DataProfile | None:
    fields = spec.child("dataProfile")
    if fields is None:
        return None
    requests = fields.integer("requestsPerStep", minimum=1)
    concurrency = fields.integer("requestConcurrency", minimum=1)
    prefetch = fields.integer("prefetchDepth", minimum=0)
    return DataProfile(
        bytes_per_step=fields.required_integer("bytesPerStep", minimum=0),
        requests_per_step=1 if requests is None else requests,
        request_concurrency=1 if concurrency is None else concurrency,
        step_compute_seconds=fields.required_integer("stepComputeMilliseconds", minimum=1) / 1000,
        prefetch_depth=0 if prefetch is None else prefetch,
    )


def _dataset_ref(spec: Fields) -> str | None:
    ref = spec.child("datasetRef")
    if ref is None:
        return None
    return ref.required_text("name")


# Pod-spec fields whose rules tsunagu does not implement when it binds: refused, never ignored.
_UNSUPPORTED_IN_BIND = (
    ("affinity", "podAffinity"),
    ("affinity", "podAntiAffinity"),
    ("topologySpreadConstraints",),
)


def _pod_requirements(spec: Fields, mode: PlacementMode, gpus: int) -> PodRequirements:
    """What each pod of the gang asks of its node: spec.template.spec plus the GPU request."""
    pod_spec = spec.child_or_empty("template").child_or_empty("spec")
    if pod_spec.has("nodeName"):
        raise pod_spec.error("nodeName", "must not be set: tsunagu chooses the node of each pod")
    if mode is PlacementMode.Bind:
        for path in _UNSUPPORTED_IN_BIND:
            parent = pod_spec
            for key in path[:-1]:
                parent = parent.child_or_empty(key)
            if parent.has(path[-1]):
                raise parent.error(
                    path[-1],
                    "is not supported in placement mode Bind (tsunagu binds the pods itself and "
                    "does not implement it); remove it or use mode Delegate",
                )
    return pod_requirements(pod_spec, {GPU_RESOURCE: gpus} if gpus > 0 else None)


def parse_training_job(obj: object) -> TrainingJobSpec:
    root, namespace, name = object_root(obj, TRAINING_JOB_KIND, namespaced=True)
    spec = root.required_child("spec")
    priority = spec.integer("priority")
    backoff_limit = spec.integer("backoffLimit", minimum=0)
    replicas = spec.integer("replicas", minimum=1)
    gpus_per_replica = spec.integer("gpusPerReplica", minimum=0)
    replicas = 1 if replicas is None else replicas
    gpus_per_replica = 1 if gpus_per_replica is None else gpus_per_replica
    if gpus_per_replica < 1:
        raise spec.error("gpusPerReplica", "must be ≥ 1 when replicas > 0")
    placement = _placement(spec)
    return TrainingJobSpec(
        namespace=namespace,
        name=name,
        dataset_ref=_dataset_ref(spec),
        replicas=replicas,
        gpus_per_replica=gpus_per_replica,
        gpu_product=spec.text("gpuProduct"),
        placement=placement,
        data_profile=_data_profile(spec),
        priority=0 if priority is None else priority,
        backoff_limit=DEFAULT_BACKOFF_LIMIT if backoff_limit is None else backoff_limit,
        created_at=created_at(root),
        requirements=_pod_requirements(spec, placement.mode, gpus_per_replica),
        workload_class=spec.text("workloadClass"),
    )
