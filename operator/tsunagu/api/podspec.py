"""Reading what a PodSpec asks of its node: requests, tolerations, node affinity, host ports.

The request of a pod is computed as kube-scheduler computes it (`PodRequests` in
k8s.io/component-helpers/resource, v0.34): app containers summed, each init container taken
at its peak, restartable (sidecar) init containers accumulated into everything after them,
pod-level requests for the resources they cover, then `spec.overhead` added.
"""

from __future__ import annotations

from collections.abc import Iterable

from tsunagu.api.fields import Fields
from tsunagu.api.quantity import resource_amount
from tsunagu.api.scheduling import (
    ALL_HOST_IPS,
    HostPort,
    NodeSelectorTerm,
    PodRequirements,
    SelectorOperator,
    SelectorRequirement,
    TaintEffect,
    Toleration,
    TolerationOperator,
)

NODE_NAME_FIELD = "metadata.name"
_PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
_MAX_PORT = 65535


def _is_pod_level_resource(name: str) -> bool:
    """Resources a pod-level `spec.resources` may set (`IsSupportedPodLevelResource`)."""
    return name in ("cpu", "memory") or name.startswith("hugepages-")


def resource_map(fields: Fields, key: str) -> dict[str, int]:
    """A ResourceList (`requests`, `limits`, `overhead`, `allocatable`) as exact amounts."""
    found = fields.child(key)
    if found is None:
        return {}
    result: dict[str, int] = {}
    for name in found.field_names():
        try:
            result[name] = resource_amount(name, found.raw(name))
        except ValueError as error:
            raise found.error(name, str(error)) from None
    return result


def _effective_requests(resources: Fields) -> dict[str, int]:
    # API defaulting: a resource with a limit and no request is requested at its limit.
    requests = resource_map(resources, "limits")
    requests.update(resource_map(resources, "requests"))
    return requests


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, 0) + amount


def _take_max(total: dict[str, int], other: dict[str, int]) -> None:
    for name, amount in other.items():
        if amount > total.get(name, 0):
            total[name] = amount


def is_restartable(container: Fields) -> bool:
    """An init container with restartPolicy Always: a sidecar that runs beside the app."""
    return container.raw("restartPolicy") == "Always"


def pod_requests(spec: Fields, first_container: dict[str, int] | None = None) -> dict[str, int]:
    """The pod's effective request per resource.

    `first_container` overrides requests of the first app container (or of the one container a
    pod without any gets), the way the gang's pods get their GPU request.
    """
    requests: dict[str, int] = {}
    containers = spec.maps("containers")
    for container in containers:
        own = _effective_requests(container.child_or_empty("resources"))
        if first_container and container is containers[0]:
            own.update(first_container)
        _add(requests, own)
    if first_container and not containers:
        _add(requests, first_container)
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container in spec.maps("initContainers"):
        own = _effective_requests(container.child_or_empty("resources"))
        if is_restartable(container):
            _add(requests, own)
            _add(sidecars, own)
            _take_max(init_peak, sidecars)
        else:
            running = dict(sidecars)
            _add(running, own)
            _take_max(init_peak, running)
    _take_max(requests, init_peak)
    pod_level = spec.child("resources")
    if pod_level is not None:
        for name, amount in _effective_requests(pod_level).items():
            if _is_pod_level_resource(name):
                requests[name] = amount
    _add(requests, resource_map(spec, "overhead"))
    return requests


def tolerations(spec: Fields) -> tuple[Toleration, ...]:
    result = []
    for entry in spec.maps("tolerations"):
        key = entry.text("key", allow_empty=True) or ""
        operator = entry.enum("operator", TolerationOperator, TolerationOperator.Equal)
        value = entry.text("value", allow_empty=True) or ""
        effect_text = entry.text("effect", allow_empty=True)
        effect = entry.enum("effect", TaintEffect, TaintEffect.NoSchedule) if effect_text else None
        if not key and operator is not TolerationOperator.Exists:
            raise entry.error("operator", "must be Exists when key is empty")
        if value and operator is TolerationOperator.Exists:
            raise entry.error("value", "must be empty when operator is Exists")
        result.append(Toleration(key, operator, value, effect))
    return tuple(result)


def _requirement(entry: Fields, *, is_field: bool) -> SelectorRequirement:
    key = entry.required_text("key")
    operator = entry.enum("operator", SelectorOperator, SelectorOperator.In)
    if entry.raw("operator") is None:
        raise entry.error("operator", "is required")
    values = entry.string_list("values")
    if is_field:
        if key != NODE_NAME_FIELD:
            raise entry.error("key", f"must be {NODE_NAME_FIELD} (the only field nodes match)")
        if operator not in (SelectorOperator.In, SelectorOperator.NotIn) or len(values) != 1:
            raise entry.error("operator", "must be In or NotIn with exactly one value")
    elif operator in (SelectorOperator.In, SelectorOperator.NotIn):
        if not values:
            raise entry.error("values", f"must not be empty for {operator}")
    elif operator in (SelectorOperator.Exists, SelectorOperator.DoesNotExist):
        if values:
            raise entry.error("values", f"must be empty for {operator}")
    elif len(values) != 1 or not _is_int64(values[0]):
        raise entry.error("values", f"must hold exactly one integer for {operator}")
    return SelectorRequirement(key, operator, values)


def _is_int64(text: str) -> bool:
    try:
        number = int(text, 10)
    except ValueError:
        return False
    return -(2**63) <= number < 2**63


def required_node_terms(spec: Fields) -> tuple[NodeSelectorTerm, ...] | None:
    """`affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution` terms, or None."""
    required = (
        spec.child_or_empty("affinity")
        .child_or_empty("nodeAffinity")
        .child("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required is None:
        return None
    terms = []
    for term in required.maps("nodeSelectorTerms"):
        terms.append(
            NodeSelectorTerm(
                match_expressions=tuple(
                    _requirement(entry, is_field=False) for entry in term.maps("matchExpressions")
                ),
                match_fields=tuple(
                    _requirement(entry, is_field=True) for entry in term.maps("matchFields")
                ),
            )
        )
    return tuple(terms)


def _ports_of(containers: Iterable[Fields]) -> list[HostPort]:
    ports = []
    for container in containers:
        for entry in container.maps("ports"):
            host_port = entry.integer("hostPort", minimum=0, maximum=_MAX_PORT)
            if not host_port:
                continue
            protocol = entry.text("protocol") or "TCP"
            if protocol not in _PROTOCOLS:
                raise entry.error("protocol", "must be one of TCP, UDP, SCTP")
            host_ip = entry.text("hostIP", allow_empty=True) or ALL_HOST_IPS
            ports.append(HostPort(host_port, protocol, host_ip))
    return ports


def host_ports(spec: Fields) -> tuple[HostPort, ...]:
    """Host ports the pod holds while it runs (`GetHostPorts` in pkg/scheduler/util).

    Those of app containers and of restartable init containers; plain init containers have
    exited before the app starts, so kube-scheduler does not count theirs.
    """
    sidecars = [c for c in spec.maps("initContainers") if is_restartable(c)]
    return tuple(_ports_of([*sidecars, *spec.maps("containers")]))


def pod_requirements(
    spec: Fields, first_container: dict[str, int] | None = None
) -> PodRequirements:
    """What a pod asks of its node, read as kube-scheduler's Filter plugins read it (with
    `first_container`'s requests put on its first container, as for a TrainingJob's GPUs)."""
    return PodRequirements.of(
        pod_requests(spec, first_container),
        tolerations=tolerations(spec),
        node_selector=spec.string_map("nodeSelector"),
        required_terms=required_node_terms(spec),
        host_ports=host_ports(spec),
    )
