"""What tsunagu reads from v1 Node and v1 Pod objects: resources, taints, labels, usage.

DESIGN.md §7 for the GPU accounting; every other resource is counted the same way.
"""

from __future__ import annotations

from tsunagu.api.fields import Fields
from tsunagu.api.names import (
    CPU_RESOURCE,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    MEMORY_RESOURCE,
    NODE_KIND,
    POD_KIND,
    PODS_RESOURCE,
    REGION_LABEL,
)
from tsunagu.api.podspec import host_ports, pod_requests, resource_map
from tsunagu.api.quantity import parse_device_count
from tsunagu.api.scheduling import ResourceAmounts, Taint, TaintEffect, amounts
from tsunagu.api.types import NodeInfo, PodUsage

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_CORE_RESOURCES = frozenset({CPU_RESOURCE, MEMORY_RESOURCE, PODS_RESOURCE})


def _named_root(obj: object, kind: str, *, namespaced: bool) -> tuple[Fields, str, str]:
    root = Fields.root(obj, kind)
    metadata = root.required_child("metadata")
    name = metadata.required_text("name")
    namespace = (metadata.text("namespace") or "default") if namespaced else ""
    return root.renamed(f"{namespace}/{name}" if namespaced else name), namespace, name


def _gpu_count(resources: Fields, key: str) -> int:
    value = resources.raw(key)
    if value is None:
        return 0
    try:
        return parse_device_count(value)
    except ValueError as error:
        raise resources.error(key, str(error)) from None


def _taints(spec: Fields) -> tuple[Taint, ...]:
    taints = []
    for entry in spec.maps("taints"):
        effect = entry.enum("effect", TaintEffect, TaintEffect.NoSchedule)
        if entry.raw("effect") is None:
            raise entry.error("effect", "is required")
        taints.append(
            Taint(
                key=entry.required_text("key"),
                value=entry.text("value", allow_empty=True) or "",
                effect=effect,
            )
        )
    return tuple(taints)


def _allocatable(status: Fields) -> ResourceAmounts | None:
    """status.allocatable, or None for a node described by its GPUs alone.

    A kubelet always reports cpu, memory and pods, and kube-scheduler reads a missing resource
    as 0. Hand-written and simulated nodes often list only `nvidia.com/gpu`; reading those as
    "0 pods" would make them useless, so a node that lists none of the core resources is read
    as limiting GPUs alone.
    """
    allocatable = resource_map(status, "allocatable")
    if not _CORE_RESOURCES & allocatable.keys():
        return None
    return amounts(allocatable)


def parse_node(obj: object) -> NodeInfo:
    root, _, name = _named_root(obj, NODE_KIND, namespaced=False)
    labels = root.child_or_empty("metadata").string_map("labels") or {}
    spec = root.child_or_empty("spec")
    status = root.child_or_empty("status")
    allocatable = status.child_or_empty("allocatable")
    ready = True
    for condition in status.maps("conditions"):
        if condition.raw("type") == "Ready":
            ready = condition.raw("status") == "True"
    unschedulable = spec.boolean("unschedulable", False)
    return NodeInfo(
        name=name,
        region=labels.get(REGION_LABEL) or None,
        allocatable_gpus=_gpu_count(allocatable, GPU_RESOURCE),
        gpu_product=labels.get(GPU_PRODUCT_LABEL) or None,
        schedulable=ready and not unschedulable,
        labels=tuple(sorted(labels.items())),
        taints=_taints(spec),
        allocatable=_allocatable(status),
        unschedulable=unschedulable,
        ready=ready,
    )


def _container_gpus(container: Fields) -> int:
    resources = container.child_or_empty("resources")
    requests = resources.child_or_empty("requests")
    if requests.has(GPU_RESOURCE):
        return _gpu_count(requests, GPU_RESOURCE)
    # Kubernetes defaults a missing request to the limit.
    return _gpu_count(resources.child_or_empty("limits"), GPU_RESOURCE)


def pod_gpu_request(spec: Fields) -> int:
    """GPUs a pod holds, counted the way kube-scheduler counts them.

    Init containers run one at a time before the app containers, so the pod needs the larger of
    the app containers' sum and the largest init container. Restartable init containers
    (sidecars) keep running, so they add to everything started after them.
    """
    sidecars = 0
    init_peak = 0
    for container in spec.maps("initContainers"):
        gpus = _container_gpus(container)
        if container.raw("restartPolicy") == "Always":
            sidecars += gpus
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, sidecars + gpus)
    app = sum(_container_gpus(container) for container in spec.maps("containers"))
    return max(init_peak, app + sidecars)


def parse_pod(obj: object) -> PodUsage:
    root, namespace, name = _named_root(obj, POD_KIND, namespaced=True)
    spec = root.child_or_empty("spec")
    phase = root.child_or_empty("status").text("phase")
    return PodUsage(
        namespace=namespace,
        name=name,
        node_name=spec.text("nodeName"),
        gpus=pod_gpu_request(spec),
        terminal=phase in _TERMINAL_PHASES,
        requests=amounts(pod_requests(spec)),
        host_ports=host_ports(spec),
    )
