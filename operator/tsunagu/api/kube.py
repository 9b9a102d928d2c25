"""GPU accounting read from v1 Node and v1 Pod objects (DESIGN.md §7)."""

from __future__ import annotations

from tsunagu.api.fields import Fields
from tsunagu.api.names import GPU_PRODUCT_LABEL, GPU_RESOURCE, NODE_KIND, POD_KIND, REGION_LABEL
from tsunagu.api.quantity import parse_device_count
from tsunagu.api.types import NodeInfo, PodUsage

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


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
    return NodeInfo(
        name=name,
        region=labels.get(REGION_LABEL) or None,
        allocatable_gpus=_gpu_count(allocatable, GPU_RESOURCE),
        gpu_product=labels.get(GPU_PRODUCT_LABEL) or None,
        schedulable=ready and not spec.boolean("unschedulable", False),
        labels=tuple(sorted(labels.items())),
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
    )
