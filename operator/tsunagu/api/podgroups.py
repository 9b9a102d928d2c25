"""Pod groups: gangs of pods that another controller creates (an Indexed Job, a JobSet, a
PyTorchJob) and that name tsunagu as their scheduler.

A pod is a member of group G when it has `schedulerName: tsunagu` and the label
`scheduling.x-k8s.io/pod-group: G` (the label scheduler-plugins' Coscheduling reads, so its users
change only `schedulerName`). The group's size is `PodGroup.spec.minMember` of the PodGroup named
G in the pod's namespace, or, without one, the pods' `tsunagu.io/min-member` annotation. What a
TrainingJob says in its spec, a pod says in annotations: `tsunagu.io/dataset`,
`tsunagu.io/max-rtt-ms`, `tsunagu.io/max-throughput-loss`, `tsunagu.io/objective`,
`tsunagu.io/workload-class`, with the same meaning.

Everything here is pure: pod and PodGroup dicts in, typed values out; the gang a group asks for
is a `TrainingJobSpec`, so the engine decides it as it decides a TrainingJob.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import product

from tsunagu.api.fields import Fields, SpecError
from tsunagu.api.names import GPU_RESOURCE, JOB_LABEL, SCHEDULER_NAME
from tsunagu.api.parse import created_at, object_root
from tsunagu.api.podspec import pod_requirements
from tsunagu.api.scheduling import NodeSelectorTerm, PodRequirements, amounts
from tsunagu.api.types import JobKey, Objective, PlacementMode, PlacementPolicy, TrainingJobSpec

POD_GROUP_GROUP = "scheduling.x-k8s.io"
POD_GROUP_VERSION = "v1alpha1"
POD_GROUP_API_VERSION = f"{POD_GROUP_GROUP}/{POD_GROUP_VERSION}"
POD_GROUP_KIND = "PodGroup"
POD_GROUPS = "podgroups"
POD_GROUP_LABEL = f"{POD_GROUP_GROUP}/pod-group"

MIN_MEMBER_ANNOTATION = "tsunagu.io/min-member"
DATASET_ANNOTATION = "tsunagu.io/dataset"
MAX_RTT_ANNOTATION = "tsunagu.io/max-rtt-ms"
MAX_LOSS_ANNOTATION = "tsunagu.io/max-throughput-loss"
OBJECTIVE_ANNOTATION = "tsunagu.io/objective"
WORKLOAD_CLASS_ANNOTATION = "tsunagu.io/workload-class"
# What the pods of one group must agree on (each is the gang's, not one pod's).
GROUP_ANNOTATIONS = (
    MIN_MEMBER_ANNOTATION, DATASET_ANNOTATION, MAX_RTT_ANNOTATION, MAX_LOSS_ANNOTATION,
    OBJECTIVE_ANNOTATION, WORKLOAD_CLASS_ANNOTATION,
)  # fmt: skip

# A group's key in the queue, the assume cache and the in-flight set: a name with a "/" is no
# object name, so no TrainingJob of the same name can share it. A pod that names tsunagu but
# no group is a group of one of its own.
_KEY_PREFIX = "podgroup/"
_LONE_PREFIX = "pod/"
# Merging the required node affinity of pods that differ multiplies their terms; beyond this
# the group is refused rather than judged slowly.
MAX_MERGED_TERMS = 64


def group_key(namespace: str, name: str) -> JobKey:
    return (namespace, f"{_KEY_PREFIX}{name}")


def lone_pod_key(namespace: str, pod: str) -> JobKey:
    return (namespace, f"{_LONE_PREFIX}{pod}")


def is_group_key(key: JobKey) -> bool:
    return key[1].startswith((_KEY_PREFIX, _LONE_PREFIX))


def is_lone_pod(key: JobKey) -> bool:
    """A pod that names tsunagu and no group: a gang of one."""
    return key[1].startswith(_LONE_PREFIX)


def group_name(key: JobKey) -> str:
    """The PodGroup's name (for a lone pod: the pod's)."""
    return key[1].removeprefix(_KEY_PREFIX).removeprefix(_LONE_PREFIX)


@dataclass(frozen=True, slots=True)
class PodGroupObject:
    """A scheduler-plugins PodGroup: how many pods must start together."""

    namespace: str
    name: str
    uid: str
    min_member: int
    schedule_timeout_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class GroupPod:
    """What the scheduler needs of one member pod."""

    name: str
    uid: str
    node_name: str | None
    phase: str
    deleting: bool
    requirements: PodRequirements
    priority: int
    created_at: float
    # The group annotations as written (compared across pods), and the first problem with them.
    annotations: tuple[tuple[str, str], ...]

    @property
    def pending(self) -> bool:
        """Waits for a node: unbound, alive."""
        return self.node_name is None and not self.deleting and self.phase == "Pending"

    @property
    def active(self) -> bool:
        """Holds its node: bound and not finished."""
        return self.node_name is not None and not self.deleting and self.phase in _ACTIVE


_ACTIVE = frozenset({"Pending", "Running", "Unknown"})


def group_pod_from(body: Mapping[str, object]) -> tuple[JobKey, GroupPod] | None:
    """The pod's group and what it asks, or None when tsunagu does not schedule it (another
    scheduler's, or a TrainingJob's own pod). A pod without a group label is a group of one."""
    spec = body.get("spec")
    metadata = body.get("metadata")
    if not isinstance(spec, Mapping) or not isinstance(metadata, Mapping):
        return None
    if spec.get("schedulerName") != SCHEDULER_NAME:
        return None
    labels = metadata.get("labels") or {}
    if not isinstance(labels, Mapping) or JOB_LABEL in labels:
        return None
    namespace = str(metadata.get("namespace") or "default")
    name = str(metadata.get("name") or "")
    group = labels.get(POD_GROUP_LABEL)
    key = group_key(namespace, group) if isinstance(group, str) and group else None
    pod_spec = Fields(spec, "Pod", f"{namespace}/{name}", "spec")
    raw_annotations = metadata.get("annotations")
    annotations = raw_annotations if isinstance(raw_annotations, Mapping) else {}
    status = body.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    priority = spec.get("priority")
    node = spec.get("nodeName")
    pod = GroupPod(
        name=name,
        uid=str(metadata.get("uid") or ""),
        node_name=node if isinstance(node, str) and node else None,
        phase=phase if isinstance(phase, str) and phase else "Pending",
        deleting=bool(metadata.get("deletionTimestamp")),
        requirements=pod_requirements(pod_spec),
        priority=priority if isinstance(priority, int) else 0,
        created_at=_creation(body),
        annotations=tuple(
            (key, str(annotations[key])) for key in GROUP_ANNOTATIONS if key in annotations
        ),
    )
    return key or lone_pod_key(namespace, name), pod


def _creation(body: Mapping[str, object]) -> float:
    try:
        return created_at(Fields.root(body, "Pod"))
    except SpecError:
        return 0.0


def parse_pod_group(obj: object) -> PodGroupObject:
    root, namespace, name = object_root(obj, POD_GROUP_KIND, namespaced=True)
    spec = root.child_or_empty("spec")
    min_member = spec.integer("minMember", minimum=1)
    return PodGroupObject(
        namespace=namespace,
        name=name,
        uid=root.child_or_empty("metadata").text("uid") or "",
        min_member=1 if min_member is None else min_member,
        schedule_timeout_seconds=spec.integer("scheduleTimeoutSeconds", minimum=1),
    )


def strictest(requirements: Sequence[PodRequirements]) -> PodRequirements:
    """One set of requirements that every node fit for it satisfies for each of the pods: the
    largest request of every resource, every node selector, the tolerations all pods share,
    every host port, and the required affinity terms of all pods at once.

    The pods of a group are then interchangeable on the nodes chosen for it, at the price of
    reserving the largest pod's resources for each (said in the docs). Raises ValueError when
    the affinity terms multiply beyond MAX_MERGED_TERMS."""
    distinct = list(dict.fromkeys(requirements))
    if len(distinct) == 1:
        return distinct[0]
    if not distinct:
        return PodRequirements()
    largest: dict[str, int] = {}
    for each in distinct:
        for resource, amount in each.requests:
            largest[resource] = max(largest.get(resource, 0), amount)
    shared = set(distinct[0].tolerations)
    for each in distinct[1:]:
        shared &= set(each.tolerations)
    selector = sorted({pair for each in distinct for pair in each.node_selector})
    ports = tuple(dict.fromkeys(port for each in distinct for port in each.host_ports))
    terms = _all_terms(each.required_terms for each in distinct)
    merged = PodRequirements(
        requests=amounts(largest),
        tolerations=tuple(t for t in distinct[0].tolerations if t in shared),
        node_selector=tuple(selector),
        required_terms=terms,
        host_ports=ports,
        reads_node_name=any(term.match_fields for term in terms or ()),
    )
    return merged


def _all_terms(
    per_pod: Iterable[tuple[NodeSelectorTerm, ...] | None],
) -> tuple[NodeSelectorTerm, ...] | None:
    """Terms a node matches only if it matches some term of every pod (a node matches a pod's
    affinity when it matches any one of its terms)."""
    constrained = [terms for terms in dict.fromkeys(per_pod) if terms is not None]
    if not constrained:
        return None
    count = 1
    for terms in constrained:
        count *= len(terms)
    if count > MAX_MERGED_TERMS:
        raise ValueError(
            f"the pods' required node affinities differ too much to judge together "
            f"({count} combined terms, at most {MAX_MERGED_TERMS})"
        )
    return tuple(
        NodeSelectorTerm(
            match_expressions=tuple(e for term in combo for e in term.match_expressions),
            match_fields=tuple(f for term in combo for f in term.match_fields),
        )
        for combo in product(*constrained)
    )


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    dataset: str | None
    placement: PlacementPolicy
    workload_class: str | None
    min_member: int | None


def group_policy(namespace: str, group: str, pods: Sequence[GroupPod]) -> GroupPolicy:
    """The gang's policy from its pods' annotations, which must agree; SpecError names the
    annotation otherwise."""
    written: dict[str, str] = {}
    for pod in sorted(pods, key=lambda p: p.name):
        for key, value in pod.annotations:
            if written.setdefault(key, value) != value:
                raise SpecError(
                    POD_GROUP_KIND, f"{namespace}/{group}", f"metadata.annotations[{key}]",
                    f"the group's pods disagree: {written[key]!r} and {value!r} (on {pod.name})",
                )  # fmt: skip
    fields = Fields(written, POD_GROUP_KIND, f"{namespace}/{group}", "metadata.annotations")
    return GroupPolicy(
        dataset=written.get(DATASET_ANNOTATION) or None,
        placement=PlacementPolicy(
            mode=PlacementMode.Bind,
            max_rtt_ms=_number(fields, MAX_RTT_ANNOTATION, 0, None),
            max_throughput_loss=_number(fields, MAX_LOSS_ANNOTATION, 0, 1),
            objective=_objective(fields),
        ),
        workload_class=written.get(WORKLOAD_CLASS_ANNOTATION) or None,
        min_member=_min_member(fields),
    )


def _number(fields: Fields, key: str, minimum: float, maximum: float | None) -> float | None:
    text = fields.text(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise fields.error(key, f"must be a number, not {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum) or value != value:
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"≥ {minimum:g}"
        raise fields.error(key, f"must be {bound}, not {text}")
    return value


def _min_member(fields: Fields) -> int | None:
    text = fields.text(MIN_MEMBER_ANNOTATION)
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise fields.error(MIN_MEMBER_ANNOTATION, f"must be a whole number ≥ 1, not {text!r}")
    return int(text)


def _objective(fields: Fields) -> Objective:
    text = fields.text(OBJECTIVE_ANNOTATION)
    if text is None:
        return Objective.Balanced
    try:
        return Objective(text)
    except ValueError:
        allowed = ", ".join(o.value for o in Objective)
        problem = f"must be one of {allowed}, not {text!r}"
        raise fields.error(OBJECTIVE_ANNOTATION, problem) from None


def gang_of(
    key: JobKey,
    pods: Sequence[GroupPod],
    policy: GroupPolicy,
    *,
    keep_to: str | None = None,
    regions: Iterable[str] = (),
) -> TrainingJobSpec:
    """The gang these pods ask for, as the engine reads a TrainingJob: one replica per pod, each
    asking the strictest of their requirements. `keep_to` confines it to one region (the one
    its running members are in), given every region's name."""
    requirements = strictest([pod.requirements for pod in pods])
    placement = policy.placement
    if keep_to is not None:
        placement = replace(
            placement, excluded_regions=tuple(sorted(r for r in regions if r != keep_to))
        )
    return TrainingJobSpec(
        namespace=key[0],
        name=key[1],
        dataset_ref=policy.dataset,
        replicas=len(pods),
        gpus_per_replica=requirements.request(GPU_RESOURCE),
        placement=placement,
        priority=max((pod.priority for pod in pods), default=0),
        created_at=min((pod.created_at for pod in pods), default=0.0),
        requirements=requirements,
        workload_class=policy.workload_class,
    )


def group_status(min_member: int | None, pods: Iterable[GroupPod]) -> dict[str, object]:
    """The PodGroup status fields scheduler-plugins defines, from the members as they are:
    phase (Pending, Scheduled, Running, Finished, Failed) and the counts."""
    scheduled = running = succeeded = failed = 0
    for pod in pods:
        if pod.node_name is not None and not pod.deleting:
            scheduled += 1
        running += pod.phase == "Running" and not pod.deleting
        succeeded += pod.phase == "Succeeded"
        failed += pod.phase == "Failed"
    needed = min_member or 1
    if succeeded >= needed and running == 0:
        phase = "Finished"
    elif failed and succeeded + running < needed and scheduled - succeeded - failed < needed:
        phase = "Failed"
    elif running >= needed:
        phase = "Running"
    elif scheduled >= needed:
        phase = "Scheduled"
    else:
        phase = "Pending"
    return {
        "phase": phase,
        "scheduled": scheduled,
        "running": running,
        "succeeded": succeeded,
        "failed": failed,
    }
