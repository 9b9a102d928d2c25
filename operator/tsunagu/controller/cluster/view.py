"""The nodes and pods of one cluster as the operator last saw them, fed by watch events: no
list call per decision. The scheduler reads immutable snapshots built from it (with the Regions
and Datasets of the `Catalog`). All access happens on the operator's event loop, so no locking.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tsunagu.api.members import (
    ANCHOR_KIND,
    HUB_JOB_UID_LABEL,
    HUB_NAMESPACE_LABEL,
    anchor_name,
    qualified_node,
)
from tsunagu.api.names import (
    GPU_RESOURCE,
    JOB_LABEL,
    PODS_RESOURCE,
    RANK_LABEL,
    TRAINING_JOB_KIND,
)
from tsunagu.api.parse import SpecError, parse_node, parse_pod
from tsunagu.api.podgroups import GroupPod, group_pod_from
from tsunagu.api.types import JobKey, NodeInfo, PodUsage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobPod:
    """What the lifecycle needs to know of one pod of a TrainingJob."""

    name: str
    rank: int
    node_name: str | None
    phase: str
    deleting: bool
    # The controller ownerReference: only a TrainingJob's own uid makes the pod one of its gang.
    owner_uid: str | None
    region: str | None
    owner_kind: str | None = None
    # status.reason of a pod that failed (e.g. OutOfnvidia.com/gpu when the kubelet refused it).
    reason: str | None = None
    # The member cluster the pod is in (its node_name then qualified); None: the hub.
    cluster: str | None = None

    @property
    def key(self) -> str:
        """Unique over every cluster: the name, qualified by a member's name."""
        return qualified_node(self.cluster, self.name)

    @property
    def refused_by_kubelet(self) -> bool:
        """Failed before it ran because the kubelet's admission refused it: the gang never had
        that node, which is no fault of the training program."""
        return self.phase == "Failed" and _is_admission_refusal(self.reason)


# The reasons a kubelet gives a pod it refuses at admission (its predicate admit handler and
# device manager): the node lacks a resource, or no longer matches the pod's affinity or
# tolerations.
_ADMISSION_REASONS = frozenset({"UnexpectedAdmissionError", "NodeAffinity", "Taint",
                                "NodeName", "NodePorts", "PodOSNotSupported"})  # fmt: skip


def _is_admission_refusal(reason: str | None) -> bool:
    return reason is not None and (reason.startswith("OutOf") or reason in _ADMISSION_REASONS)


def _holds(pod: PodUsage) -> bool:
    """Whether the pod takes anything from a node now: bound and not finished."""
    return pod.node_name is not None and not pod.terminal


def _controller(metadata: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(kind, uid) of the controller ownerReference, or (None, None)."""
    for reference in metadata.get("ownerReferences") or []:
        if reference.get("controller"):
            return reference.get("kind"), str(reference.get("uid"))
    return None, None


def _not_ready_since(node: Mapping[str, Any], now: float) -> float | None:
    """When the node's Ready condition stopped being True (its lastTransitionTime, or `now`
    when that is missing); None while it is Ready or has no Ready condition."""
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return None
        try:
            since = datetime.fromisoformat(
                str(condition["lastTransitionTime"]).replace("Z", "+00:00")
            )
        except (KeyError, ValueError):
            return now
        return min(since.timestamp(), now)
    return None


def job_pod_from(
    body: Mapping[str, Any], cluster: str | None = None
) -> tuple[JobKey, JobPod] | None:
    """The pod of a TrainingJob, in the hub or in `cluster` (a member, where its owner is the
    job's anchor ConfigMap and the hub job's uid is a label: see api.members)."""
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    job_name = labels.get(JOB_LABEL)
    if not job_name:
        return None
    try:
        rank = int(labels.get(RANK_LABEL, "-1"))
    except ValueError:
        rank = -1
    owner_kind, owner_uid = _controller(metadata)
    namespace = metadata.get("namespace", "default")
    if cluster is not None:
        owner = _member_owner(metadata, job_name, namespace)
        if owner is None:
            return None
        owner_kind, owner_uid = owner
    node = (body.get("spec") or {}).get("nodeName")
    pod = JobPod(
        name=metadata["name"],
        rank=rank,
        node_name=qualified_node(cluster, node) if node else None,
        phase=(body.get("status") or {}).get("phase") or "Pending",
        deleting=bool(metadata.get("deletionTimestamp")),
        owner_uid=owner_uid,
        region=labels.get("tsunagu.io/region"),
        owner_kind=owner_kind,
        reason=(body.get("status") or {}).get("reason"),
        cluster=cluster,
    )
    return (namespace, job_name), pod


def _member_owner(
    metadata: Mapping[str, Any], job_name: str, namespace: str
) -> tuple[str | None, str | None] | None:
    """In a member: the hub TrainingJob a pod belongs to, when its controller is the job's
    anchor and its labels name the hub job (namespace and uid); None for any other pod, even
    with the job's label (one of a tsunagu that is hub of the member itself, say): it is no
    gang of ours, though it still takes its node's resources."""
    labels = metadata.get("labels") or {}
    for reference in metadata.get("ownerReferences") or []:
        if (
            reference.get("controller")
            and reference.get("kind") == ANCHOR_KIND
            and reference.get("name") == anchor_name(job_name)
            and labels.get(HUB_NAMESPACE_LABEL) == namespace
            and labels.get(HUB_JOB_UID_LABEL)
        ):
            return TRAINING_JOB_KIND, str(labels[HUB_JOB_UID_LABEL])
    return None


@dataclass
class ClusterView:
    """Nodes (with their readiness) and pods (every pod with its requests, the pods of
    TrainingJobs by job, and the members of pod groups by group).

    The view of a member (`cluster`) qualifies its node names (api.members) and keeps no pod
    groups: other controllers' gangs are placed in their own cluster only."""

    cluster: str | None = None

    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    # Every pod of the cluster by (namespace, name), with what it requests of its node.
    pods: dict[JobKey, PodUsage] = field(default_factory=dict)
    job_pods: dict[JobKey, dict[str, JobPod]] = field(default_factory=lambda: defaultdict(dict))
    # Pods of other controllers that name tsunagu as scheduler, by group key (api.podgroups).
    group_pods: dict[JobKey, dict[str, GroupPod]] = field(default_factory=lambda: defaultdict(dict))
    # Nodes whose Ready condition is not True → since when (unix seconds). Their pods are lost
    # once that lasted longer than a grace period (a cordon is not a loss).
    not_ready: dict[str, float] = field(default_factory=dict)

    # --- nodes -----------------------------------------------------------------------------
    def upsert_node(self, body: Mapping[str, Any]) -> bool:
        """Records a node; True when its GPU capacity or availability changed."""
        try:
            node = parse_node(body)
        except SpecError as error:
            logger.warning("ignoring node: %s", error)
            return False
        if self.cluster is not None:
            node = replace(node, name=qualified_node(self.cluster, node.name), cluster=self.cluster)
        previous = self.nodes.get(node.name)
        self.nodes[node.name] = node
        was_ready = node.name not in self.not_ready
        since = _not_ready_since(body, time.time())
        if since is None:
            self.not_ready.pop(node.name, None)
        else:
            self.not_ready.setdefault(node.name, since)
        return previous != node or was_ready != (node.name not in self.not_ready)

    def delete_node(self, name: str) -> bool:
        """Forgets a node by its own name (as its cluster names it)."""
        name = qualified_node(self.cluster, name)
        self.not_ready.pop(name, None)
        return self.nodes.pop(name, None) is not None

    # --- pods ------------------------------------------------------------------------------
    def upsert_pod(self, body: Mapping[str, Any]) -> tuple[JobKey | None, bool]:
        """Records a pod; returns its TrainingJob or pod group (if any) and whether it released
        what it held of a node."""
        metadata = body.get("metadata") or {}
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        released = False
        try:
            usage = parse_pod(body)
        except SpecError as error:
            logger.warning("ignoring pod: %s", error)
            usage = None
        if usage is not None and usage.node_name and self.cluster is not None:
            usage = replace(usage, node_name=qualified_node(self.cluster, usage.node_name))
        if usage is not None:
            # Every pod, whatever its scheduler: each takes its requests and a pod slot of its
            # node once bound (a DaemonSet's, another scheduler's, a pod bound by hand).
            previous = self.pods.get(key)
            released = previous is not None and _holds(previous) and not _holds(usage)
            self.pods[key] = usage
        job = job_pod_from(body, self.cluster)
        if job is None:
            if self.cluster is not None:
                return None, released
            return self._upsert_group_pod(body), released
        job_key, pod = job
        self.job_pods[job_key][pod.name] = pod
        return job_key, released

    def _upsert_group_pod(self, body: Mapping[str, Any]) -> JobKey | None:
        try:
            member = group_pod_from(body)
        except SpecError as error:
            logger.warning("ignoring pod of a pod group: %s", error)
            return None
        if member is None:
            return None
        key, pod = member
        self.group_pods[key][pod.name] = pod
        return key

    def delete_pod(self, body: Mapping[str, Any]) -> tuple[JobKey | None, bool]:
        metadata = body.get("metadata") or {}
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        previous = self.pods.pop(key, None)
        released = previous is not None and _holds(previous)
        job = job_pod_from(body, self.cluster)
        if job is not None:
            job_key, pod = job
            _drop(self.job_pods, job_key, pod.name)
            return job_key, released
        if self.cluster is not None:
            return None, released
        try:
            member = group_pod_from(body)
        except SpecError:
            member = None
        if member is None:
            return None, released
        _drop(self.group_pods, member[0], member[1].name)
        return member[0], released

    def forget_pods_except(self, present: set[JobKey]) -> tuple[set[JobKey], bool]:
        """After a fresh list: drops every pod not in `present` (namespace, name), whose deletion
        the watch missed. Returns the TrainingJobs that lost pods and whether GPUs came free."""
        released = False
        for key in [key for key in self.pods if key not in present]:
            usage = self.pods.pop(key)
            released = released or _holds(usage)
        jobs = _forget_missing(self.job_pods, present) | _forget_missing(self.group_pods, present)
        return jobs, released

    def pods_of(self, job: JobKey) -> dict[str, JobPod]:
        return dict(self.job_pods.get(job, {}))

    def members_of(self, group: JobKey) -> dict[str, GroupPod]:
        return dict(self.group_pods.get(group, {}))

    def node_usage(self) -> dict[str, dict[str, int]]:
        """Per node, the summed requests of the pods bound to it and not finished (with the
        pod count under "pods"), as the kubelet and kube-scheduler count them."""
        usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for pod in self.pods.values():
            if not _holds(pod):
                continue
            assert pod.node_name is not None
            used = usage[pod.node_name]
            requests = pod.requests if pod.requests is not None else ((GPU_RESOURCE, pod.gpus),)
            for resource, amount in requests:
                used[resource] += amount
            used[PODS_RESOURCE] += 1
        return usage

    def node_alive(self, node_name: str | None) -> bool:
        """False when the node is gone or not Ready: no new pod goes there."""
        name = node_name or ""
        return name in self.nodes and name not in self.not_ready

    def node_lost_in(self, node_name: str | None, grace_seconds: float, now: float) -> float:
        """Seconds until pods bound to the node count as lost: 0 when the node is gone or has
        not been Ready for `grace_seconds` (as the node-lifecycle controller evicts only after
        a toleration of NotReady), inf while it is Ready."""
        name = node_name or ""
        if name not in self.nodes:
            return 0.0
        since = self.not_ready.get(name)
        if since is None:
            return float("inf")
        return max(0.0, since + grace_seconds - now)


def _drop(by_key: dict[JobKey, dict[str, Any]], key: JobKey, name: str) -> None:
    pods = by_key.get(key)
    if pods is not None:
        pods.pop(name, None)
        if not pods:
            del by_key[key]


def _forget_missing(by_key: dict[JobKey, dict[str, Any]], present: set[JobKey]) -> set[JobKey]:
    """Drops the pods not in `present`; returns the keys that lost some."""
    changed = set()
    for key, pods in list(by_key.items()):
        for name in [name for name in pods if (key[0], name) not in present]:
            del pods[name]
            changed.add(key)
        if not pods:
            del by_key[key]
    return changed
