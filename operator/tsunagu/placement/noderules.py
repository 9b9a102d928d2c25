"""Whether one pod may run on one node, decided as kube-scheduler v1.34 decides it.

Each predicate mirrors a Filter plugin of k8s.io/kubernetes/pkg/scheduler/framework/plugins
(and the helpers in k8s.io/component-helpers/scheduling/corev1); the plugin is named in each
docstring and is the `Rule` a rejection reports. Pure functions over `api` types: the snapshot
calls them once per distinct node state and requirement, and caches the answer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tsunagu.api.names import PODS_RESOURCE, UNSCHEDULABLE_TAINT_KEY
from tsunagu.api.scheduling import (
    ALL_HOST_IPS,
    HostPort,
    NodeSelectorTerm,
    PodRequirements,
    SelectorOperator,
    SelectorRequirement,
    Taint,
    TaintEffect,
    Toleration,
    TolerationOperator,
)
from tsunagu.api.types import NodeInfo

# A node that limits nothing a pod asks for holds this many of it.
UNBOUNDED = sys.maxsize
_FILTERED_EFFECTS = frozenset({TaintEffect.NoSchedule, TaintEffect.NoExecute})
_UNSCHEDULABLE_TAINT = Taint(UNSCHEDULABLE_TAINT_KEY, "", TaintEffect.NoSchedule)


class Rule(StrEnum):
    """The rule that kept a pod off a node; kube-scheduler's plugin names, plus gpuProduct."""

    NodeUnschedulable = "NodeUnschedulable"
    GpuProduct = "GpuProduct"
    NodeAffinity = "NodeAffinity"
    TaintToleration = "TaintToleration"
    NodePorts = "NodePorts"
    NodeResourcesFit = "NodeResourcesFit"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a pod does not fit a node: the rule, and a short phrase about the node."""

    rule: Rule
    detail: str  # e.g. "tainted dedicated=infer:NoSchedule not tolerated"
    # NodeResourcesFit only: the resource short, requested and free amounts.
    resource: str = ""
    requested: int = 0
    free: int = 0


# TaintToleration, NodeUnschedulable ---------------------------------------------------------


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """`Toleration.ToleratesTaint` (component-helpers/scheduling/corev1).

    An empty effect matches every effect, an empty key (with Exists) every key; Exists ignores
    the value, Equal compares it.
    """
    if toleration.effect is not None and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator is TolerationOperator.Exists:
        return True
    return toleration.value == taint.value


def untolerated_taint(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> Taint | None:
    """The first NoSchedule or NoExecute taint no toleration tolerates (TaintToleration Filter).

    PreferNoSchedule only lowers a node's score in kube-scheduler; it never filters.
    """
    kept = tuple(tolerations)
    for taint in taints:
        if taint.effect in _FILTERED_EFFECTS and not any(tolerates(t, taint) for t in kept):
            return taint
    return None


def untolerated_preferences(taints: Iterable[Taint], tolerations: Iterable[Toleration]) -> int:
    """PreferNoSchedule taints no toleration tolerates: TaintToleration's Score, where a node
    with fewer of them ranks higher. It orders nodes, it never excludes one."""
    kept = tuple(tolerations)
    return sum(
        1
        for taint in taints
        if taint.effect is TaintEffect.PreferNoSchedule
        and not any(tolerates(t, taint) for t in kept)
    )


def blocked_by_cordon(node: NodeInfo, tolerations: Iterable[Toleration]) -> bool:
    """NodeUnschedulable: a cordoned node takes only pods tolerating its unschedulable taint."""
    return node.unschedulable and not any(tolerates(t, _UNSCHEDULABLE_TAINT) for t in tolerations)


# NodeAffinity -------------------------------------------------------------------------------


def selector_matches(selector: Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
    """`spec.nodeSelector`: every label must be present with that value."""
    return all(labels.get(key) == value for key, value in selector)


def _int64(text: str) -> int | None:
    try:
        return int(text, 10)
    except ValueError:
        return None


def requirement_matches(requirement: SelectorRequirement, value: str | None) -> bool:
    """One matchExpressions entry against the node's label value (None: label absent).

    `nodeaffinity` in component-helpers builds a `labels.Selector`: In and Exists need the
    label; NotIn and DoesNotExist hold when it is absent; Gt and Lt parse both sides as
    integers and fail when either does not parse.
    """
    operator = requirement.operator
    if operator is SelectorOperator.In:
        return value is not None and value in requirement.values
    if operator is SelectorOperator.NotIn:
        return value is None or value not in requirement.values
    if operator is SelectorOperator.Exists:
        return value is not None
    if operator is SelectorOperator.DoesNotExist:
        return value is None
    if value is None or len(requirement.values) != 1:
        return False
    have, bound = _int64(value), _int64(requirement.values[0])
    if have is None or bound is None:
        return False
    return have > bound if operator is SelectorOperator.Gt else have < bound


def term_matches(term: NodeSelectorTerm, labels: Mapping[str, str], node_name: str) -> bool:
    """A node selector term: every expression and every field requirement holds.

    A term with neither selects no node (`nodeSelectorTerm` in nodeaffinity.go).
    """
    if not term.match_expressions and not term.match_fields:
        return False
    return all(requirement_matches(r, labels.get(r.key)) for r in term.match_expressions) and all(
        requirement_matches(r, node_name) for r in term.match_fields
    )


def affinity_matches(requirements: PodRequirements, labels: Mapping[str, str], name: str) -> bool:
    """NodeAffinity Filter: nodeSelector AND (any required term); an empty term list matches
    nothing, no required affinity matches everything."""
    if not selector_matches(requirements.node_selector, labels):
        return False
    terms = requirements.required_terms
    if terms is None:
        return True
    return any(term_matches(term, labels, name) for term in terms)


# NodePorts ----------------------------------------------------------------------------------


def port_conflicts(wanted: HostPort, used: Iterable[HostPort]) -> bool:
    """`HostPortInfo.CheckConflict`: same protocol and port, and either side on every address
    (0.0.0.0) or both on the same one."""
    for port in used:
        if port.port != wanted.port or port.protocol != wanted.protocol:
            continue
        if ALL_HOST_IPS in (wanted.host_ip, port.host_ip) or wanted.host_ip == port.host_ip:
            return True
    return False


def port_in_use(wanted: Iterable[HostPort], used: Iterable[HostPort]) -> HostPort | None:
    """NodePorts Filter: the first wanted host port already taken on the node."""
    taken = tuple(used)
    return next((port for port in wanted if port_conflicts(port, taken)), None)


# The whole static part ----------------------------------------------------------------------


def static_verdict(
    node: NodeInfo, requirements: PodRequirements, gpu_product: str | None
) -> Verdict | None:
    """The rules that depend on the node alone (not on what runs there), in kube-scheduler's
    filter order; None when all of them pass."""
    if blocked_by_cordon(node, requirements.tolerations):
        return Verdict(Rule.NodeUnschedulable, "cordoned (spec.unschedulable), not tolerated")
    if gpu_product is not None and node.gpu_product != gpu_product:
        return Verdict(Rule.GpuProduct, f"not of GPU product {gpu_product}")
    if not affinity_matches(requirements, dict(node.labels), node.name):
        return Verdict(Rule.NodeAffinity, "not matching the pod's nodeSelector or node affinity")
    taint = untolerated_taint(node.taints, requirements.tolerations)
    if taint is not None:
        return Verdict(Rule.TaintToleration, f"tainted {taint} not tolerated")
    return None


# NodeResourcesFit ---------------------------------------------------------------------------


def copies_that_fit(
    requests: Iterable[tuple[str, int]], free: Mapping[str, int], bounded: bool
) -> int:
    """How many copies of a pod the free resources hold (NodeResourcesFit, `fitsRequest`).

    Every resource the pod requests counts, extended ones included; a resource the node does
    not list has none free. Each pod also takes one of `status.allocatable.pods`. A node that is
    not `bounded` (described by its GPUs alone) limits only what it lists.
    """
    copies = free.get(PODS_RESOURCE, 0) if bounded else UNBOUNDED
    for resource, amount in requests:
        if amount <= 0:
            continue
        have = free.get(resource)
        if have is None:
            if bounded:
                return 0
            continue
        copies = min(copies, max(have, 0) // amount)
        if copies == 0:
            return 0
    return copies


def resource_verdict(
    requests: Iterable[tuple[str, int]], free: Mapping[str, int], bounded: bool
) -> Verdict | None:
    """The first resource a single pod does not fit in (pods first, as `fitsRequest` does)."""
    if bounded and free.get(PODS_RESOURCE, 0) < 1:
        return Verdict(Rule.NodeResourcesFit, "too many pods", PODS_RESOURCE, 1, 0)
    for resource, amount in requests:
        have = free.get(resource)
        if have is None and not bounded:
            continue
        have = max(have or 0, 0)
        if amount > have:
            return Verdict(
                Rule.NodeResourcesFit, f"insufficient {resource}", resource, amount, have
            )
    return None


def format_amount(resource: str, amount: int) -> str:
    """An amount as a person writes it: cores for cpu, Ki/Mi/Gi/Ti for byte counts."""
    if resource == "cpu":
        return f"{amount / 1000:g}"
    if resource in ("memory", "ephemeral-storage") or resource.startswith("hugepages-"):
        for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if amount >= factor and amount % factor == 0:
                return f"{amount // factor}{suffix}"
    return str(amount)
