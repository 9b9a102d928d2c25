"""The Kubernetes scheduling vocabulary tsunagu honours: taints, tolerations, node selector
terms, host ports and the resource requirements of one pod.

Resource amounts are exact integers in the unit kube-scheduler counts them in: milli-CPUs for
`cpu`, bytes for memory and ephemeral-storage, whole units for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# A host port without hostIP is taken on every address of the node.
ALL_HOST_IPS = "0.0.0.0"

# Sorted (resource name, amount) pairs: hashable, so requirements can key caches.
ResourceAmounts = tuple[tuple[str, int], ...]


class TaintEffect(StrEnum):
    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


class TolerationOperator(StrEnum):
    Exists = "Exists"
    Equal = "Equal"


class SelectorOperator(StrEnum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"
    Gt = "Gt"
    Lt = "Lt"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: TaintEffect

    def __str__(self) -> str:
        value = f"={self.value}" if self.value else ""
        return f"{self.key}{value}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""  # empty with Exists: tolerates every taint
    operator: TolerationOperator = TolerationOperator.Equal
    value: str = ""
    effect: TaintEffect | None = None  # None: every effect


@dataclass(frozen=True, slots=True)
class SelectorRequirement:
    """One matchExpressions (or matchFields) entry of a node selector term."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    match_expressions: tuple[SelectorRequirement, ...] = ()
    # Only metadata.name, with In or NotIn, as the API server allows.
    match_fields: tuple[SelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class HostPort:
    port: int
    protocol: str = "TCP"
    host_ip: str = ALL_HOST_IPS


def amounts(values: dict[str, int]) -> ResourceAmounts:
    """The canonical, hashable form of a resource map (zero amounts dropped)."""
    return tuple(sorted((name, amount) for name, amount in values.items() if amount))


@dataclass(frozen=True, slots=True)
class PodRequirements:
    """What one pod needs from its node, as kube-scheduler's Filter plugins read it.

    `requests` is the pod's effective request (containers, init containers and overhead
    combined, see `api.podspec.pod_requests`); `required_terms` is None when the pod has no
    required node affinity (every node matches), and a tuple (possibly empty, matching nothing)
    when it has one.
    """

    requests: ResourceAmounts = ()
    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[NodeSelectorTerm, ...] | None = None
    host_ports: tuple[HostPort, ...] = ()
    # Derived once: whether any rule reads the node's name (matchFields), so results can be
    # shared between nodes that differ only by name.
    reads_node_name: bool = field(default=False, compare=False)

    def request(self, resource: str) -> int:
        for name, amount in self.requests:
            if name == resource:
                return amount
        return 0

    @classmethod
    def of(
        cls,
        requests: dict[str, int],
        *,
        tolerations: tuple[Toleration, ...] = (),
        node_selector: dict[str, str] | None = None,
        required_terms: tuple[NodeSelectorTerm, ...] | None = None,
        host_ports: tuple[HostPort, ...] = (),
    ) -> PodRequirements:
        return cls(
            requests=amounts(requests),
            tolerations=tolerations,
            node_selector=tuple(sorted((node_selector or {}).items())),
            required_terms=required_terms,
            host_ports=host_ports,
            reads_node_name=any(term.match_fields for term in required_terms or ()),
        )
