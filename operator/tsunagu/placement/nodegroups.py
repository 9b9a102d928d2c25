"""Nodes grouped by what matters to a pod, and how many pods of a requirement each group holds.

Nodes that carry the same labels, taints and cordon state and have the same resources and host
ports free give the same answer to "how many of these pods fit here?", so a region is kept as
a count of nodes per group, and the answer is computed once per group and requirement and
cached for every later decision of the batch. Group ids are interned in a `GroupTable` that
every snapshot derived from the same build shares, so they stay valid as nodes fill up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tsunagu.api.names import GPU_RESOURCE, PODS_RESOURCE
from tsunagu.api.scheduling import HostPort, PodRequirements, ResourceAmounts
from tsunagu.api.types import NodeInfo
from tsunagu.placement.noderules import (
    UNBOUNDED,
    Rule,
    Verdict,
    copies_that_fit,
    format_amount,
    port_in_use,
    resource_verdict,
    static_verdict,
    untolerated_preferences,
)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What one group of nodes offers a new pod.

    `node` is a representative for the rules that read labels and taints; the rules that
    read the node's name are evaluated per node instead (`PodRequirements.reads_node_name`).
    """

    node: NodeInfo
    free: Mapping[str, int]  # allocatable minus requests of bound, non-terminal pods; ≥ 0
    # False for a node described by its GPUs alone: it limits nothing else, pods included.
    bounded: bool
    used_ports: tuple[HostPort, ...]

    @property
    def free_gpus(self) -> int:
        return self.free.get(GPU_RESOURCE, 0)


@dataclass(frozen=True, slots=True)
class Usage:
    """What pods take from a node: requests, a count of pods, host ports."""

    requests: Mapping[str, int]
    pods: int = 0
    ports: tuple[HostPort, ...] = ()


_IDLE = Usage({})


def node_state(node: NodeInfo, usage: Usage) -> NodeState:
    """The free resources of a node once `usage` is taken (never below 0)."""
    if node.allocatable is None:
        allocatable = {GPU_RESOURCE: node.allocatable_gpus}
    else:
        allocatable = dict(node.allocatable)
    free = {
        resource: max(amount - usage.requests.get(resource, 0), 0)
        for resource, amount in allocatable.items()
    }
    bounded = node.allocatable is not None
    if bounded:
        free[PODS_RESOURCE] = max(allocatable.get(PODS_RESOURCE, 0) - usage.pods, 0)
    return NodeState(node, free, bounded, usage.ports)


def after(state: NodeState, usage: Usage) -> NodeState:
    """The state of a node once more pods take `usage` from it."""
    free = dict(state.free)
    for resource, amount in usage.requests.items():
        if resource in free:
            free[resource] = max(free[resource] - amount, 0)
    if state.bounded and usage.pods:
        free[PODS_RESOURCE] = max(free.get(PODS_RESOURCE, 0) - usage.pods, 0)
    return NodeState(state.node, free, state.bounded, state.used_ports + usage.ports)


def pods_that_fit(state: NodeState, requirements: PodRequirements, gpu_product: str | None) -> int:
    """How many pods of `requirements` the node can still take (every rule of noderules)."""
    if static_verdict(state.node, requirements, gpu_product) is not None:
        return 0
    copies = copies_that_fit(requirements.requests, state.free, state.bounded)
    if requirements.host_ports:
        # A second copy of the pod would want the same host ports as the first.
        if port_in_use(requirements.host_ports, state.used_ports) is not None:
            return 0
        copies = min(copies, 1)
    return copies


def why_not(state: NodeState, requirements: PodRequirements, gpu_product: str | None) -> Verdict:
    """The rule that keeps a pod of `requirements` off a node that takes none."""
    verdict = static_verdict(state.node, requirements, gpu_product)
    if verdict is not None:
        return verdict
    port = port_in_use(requirements.host_ports, state.used_ports)
    if port is not None:
        return Verdict(Rule.NodePorts, f"host port {port.port}/{port.protocol} in use")
    verdict = resource_verdict(requirements.requests, state.free, state.bounded)
    if verdict is not None:
        return verdict
    return Verdict(Rule.NodeResourcesFit, "full")


@dataclass(slots=True)
class Demand:
    """A requirement as a batch of decisions asks it, with its per-group answers cached."""

    requirements: PodRequirements
    gpu_product: str | None
    slots: dict[int, int] = field(default_factory=dict)  # group id → pods that fit
    # Region → (the groups it was computed for, the shortfall); a region's groups are replaced,
    # never changed, when its nodes fill up, so holding them makes the identity check exact.
    shortfalls: dict[str, tuple[Mapping[int, int], tuple[str, ...]]] = field(default_factory=dict)


class GroupTable:
    """Interned node groups and demands, shared by a snapshot and every one derived from it."""

    __slots__ = ("_demands", "_idle", "_ids", "states")

    def __init__(self) -> None:
        self._ids: dict[object, int] = {}
        self.states: list[NodeState] = []
        self._demands: dict[tuple[PodRequirements, str | None], Demand] = {}
        self._idle: dict[object, int] = {}  # nodes that run no pod, by what they offer

    def intern_node(self, node: NodeInfo, usage: Usage | None) -> int:
        """The group of a node once `usage` is taken (None: the node runs no pod)."""
        if usage is not None:
            return self.intern(node_state(node, usage))
        # Most nodes of a large cluster are alike and idle: skip building their state twice.
        key = (
            node.labels,
            node.taints,
            node.unschedulable,
            node.gpu_product,
            node.allocatable,
            node.allocatable_gpus,
        )
        found = self._idle.get(key)
        if found is None:
            found = self._idle[key] = self.intern(node_state(node, _IDLE))
        return found

    def intern(self, state: NodeState) -> int:
        node = state.node
        key = (
            node.labels,
            node.taints,
            node.unschedulable,
            node.gpu_product,
            tuple(sorted(state.free.items())),
            state.bounded,
            state.used_ports,
        )
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.states)
            self.states.append(state)
        return found

    def demand(self, requirements: PodRequirements, gpu_product: str | None) -> Demand:
        key = (requirements, gpu_product)
        found = self._demands.get(key)
        if found is None:
            found = self._demands[key] = Demand(requirements, gpu_product)
        return found

    def slots(self, group: int, demand: Demand) -> int:
        found = demand.slots.get(group)
        if found is None:
            found = demand.slots[group] = pods_that_fit(
                self.states[group], demand.requirements, demand.gpu_product
            )
        return found


def total_slots(
    table: GroupTable,
    demand: Demand,
    groups: Mapping[int, int],
    members: Mapping[str, int],
    nodes: Mapping[str, NodeInfo],
) -> int:
    """Pods of the demand that the nodes can hold, over a region's groups."""
    if demand.requirements.reads_node_name:
        return min(
            sum(
                pods_that_fit(
                    _named(table.states[group], nodes[name]),
                    demand.requirements,
                    demand.gpu_product,
                )
                for name, group in members.items()
            ),
            UNBOUNDED,
        )
    total = 0
    for group, count in groups.items():
        slots = table.slots(group, demand)
        if slots:
            total += count * slots
    return min(total, UNBOUNDED)


def _named(state: NodeState, node: NodeInfo) -> NodeState:
    return NodeState(node, state.free, state.bounded, state.used_ports)


def best_fit(
    table: GroupTable,
    demand: Demand,
    members: Mapping[str, int],
    nodes: Mapping[str, NodeInfo],
    replicas: int,
) -> tuple[str, ...] | None:
    """The node of each rank by best-fit packing, or None when the gang does not fit.

    Each replica goes to the node with the fewest free GPUs that still fits it, ties by name;
    nodes with PreferNoSchedule taints the pod does not tolerate come after all others, the
    fewer such taints the sooner. Taking a pod only makes that node a tighter fit, so it keeps
    receiving replicas until it holds no more, and one sorted pass places the whole gang.
    """
    if replicas <= 0:
        return ()
    requirements = demand.requirements
    fitting = []
    for name, group in members.items():
        state = table.states[group]
        if requirements.reads_node_name:
            slots = pods_that_fit(_named(state, nodes[name]), requirements, demand.gpu_product)
        else:
            slots = table.slots(group, demand)
        if slots:
            taints = state.node.taints
            avoid = untolerated_preferences(taints, requirements.tolerations) if taints else 0
            fitting.append((avoid, state.free_gpus, name, slots))
    fitting.sort()
    ranks: list[str] = []
    for _, _, name, slots in fitting:
        ranks.extend([name] * min(slots, replicas - len(ranks)))
        if len(ranks) == replicas:
            return tuple(ranks)
    return None


def shortfall(
    table: GroupTable,
    demand: Demand,
    groups: Mapping[int, int],
    members: Mapping[str, int],
    nodes: Mapping[str, NodeInfo],
) -> tuple[str, ...]:
    """Why the nodes that take no pod of the demand take none, most common reason first.

    e.g. "3 nodes tainted dedicated=infer:NoSchedule not tolerated",
    "2 nodes short of cpu: 60 requested, 36 free on the best node".
    """
    weighted: list[tuple[NodeState, int]]
    if demand.requirements.reads_node_name:
        weighted = [
            (_named(table.states[group], nodes[name]), 1) for name, group in members.items()
        ]
    else:
        weighted = [
            (table.states[group], count)
            for group, count in groups.items()
            if not table.slots(group, demand)
        ]
    counts: dict[str, int] = {}
    short: dict[str, tuple[int, int, int]] = {}  # resource → (nodes, requested, best free)
    for state, count in weighted:
        if pods_that_fit(state, demand.requirements, demand.gpu_product):
            continue
        verdict = why_not(state, demand.requirements, demand.gpu_product)
        if verdict.resource:
            seen, _, best = short.get(verdict.resource, (0, 0, 0))
            short[verdict.resource] = (seen + count, verdict.requested, max(best, verdict.free))
        else:
            counts[verdict.detail] = counts.get(verdict.detail, 0) + count
    for resource, (seen, requested, best) in short.items():
        detail = (
            f"short of {resource}: {format_amount(resource, requested)} requested, "
            f"{format_amount(resource, best)} free on the best node"
        )
        counts[detail] = seen
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(f"{count} node{'s' if count != 1 else ''} {detail}" for detail, count in ordered)


def usage_of(pods: Iterable[tuple[ResourceAmounts, tuple[HostPort, ...]]]) -> Usage:
    """The usage of several pods, each given by its requests and host ports, summed."""
    requests: dict[str, int] = {}
    ports: list[HostPort] = []
    count = 0
    for pod_requests, pod_ports in pods:
        count += 1
        for resource, amount in pod_requests:
            requests[resource] = requests.get(resource, 0) + amount
        ports.extend(pod_ports)
    return Usage(requests, count, tuple(ports))
