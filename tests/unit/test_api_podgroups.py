"""Pod groups read from plain pod and PodGroup dicts: membership, the strictest requirements of
pods that differ, the group's policy from annotations, its status, and the gang the engine
decides."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit import test_placement_fixtures as fixtures
from tsunagu.api.fields import SpecError
from tsunagu.api.podgroups import (
    GroupPod,
    gang_of,
    group_key,
    group_name,
    group_pod_from,
    group_policy,
    group_status,
    is_group_key,
    is_lone_pod,
    lone_pod_key,
    parse_pod_group,
    strictest,
)
from tsunagu.api.scheduling import (
    HostPort,
    NodeSelectorTerm,
    PodRequirements,
    SelectorOperator,
    SelectorRequirement,
    Toleration,
    TolerationOperator,
)
from tsunagu.api.types import Objective, PlacementMode
from tsunagu.placement.engine import decide
from tsunagu.placement.snapshot import ClusterSnapshot

GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


def pod(
    name: str = "w-0",
    *,
    group: str | None = "g",
    scheduler: str = "tsunagu",
    gpus: int = 1,
    node: str | None = None,
    phase: str = "Pending",
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    all_labels = dict(labels or {})
    if group is not None:
        all_labels[GROUP_LABEL] = group
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "labels": all_labels,
            "annotations": annotations or {},
            "creationTimestamp": "2026-12-01T00:00:00Z",
        },
        "spec": {
            "schedulerName": scheduler,
            "containers": [
                {"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus), "cpu": "2"}}}
            ],
            **spec,
        },
        "status": {"phase": phase},
    }
    if node:
        body["spec"]["nodeName"] = node
    return body


def member(body: dict[str, Any]) -> GroupPod:
    found = group_pod_from(body)
    assert found is not None
    return found[1]


def test_a_member_names_tsunagu_and_a_group() -> None:
    found = group_pod_from(pod())
    assert found is not None
    key, member_pod = found
    assert key == group_key("team", "g")
    assert is_group_key(key)
    assert group_name(key) == "g"
    assert member_pod.pending
    assert member_pod.requirements.request("nvidia.com/gpu") == 1
    assert member_pod.requirements.request("cpu") == 2000


@pytest.mark.parametrize(
    "body",
    [
        pod(scheduler="default-scheduler"),
        pod(labels={"tsunagu.io/job": "a-trainingjob"}),
    ],
    ids=["other scheduler", "a TrainingJob's own pod"],
)
def test_pods_that_are_not_members_are_left_alone(body: dict[str, Any]) -> None:
    assert group_pod_from(body) is None


@pytest.mark.parametrize("group", [None, ""], ids=["no label", "empty label"])
def test_a_pod_that_names_tsunagu_and_no_group_is_a_group_of_its_own(group: str | None) -> None:
    found = group_pod_from(pod("solo", group=group))
    assert found is not None
    key, _ = found
    assert key == lone_pod_key("team", "solo")
    assert is_group_key(key)
    assert is_lone_pod(key)
    assert group_name(key) == "solo"
    assert key != group_key("team", "solo"), "a group named like the pod is another group"


def test_a_group_key_never_equals_a_trainingjobs_key() -> None:
    assert group_key("team", "g") != ("team", "g")
    assert not is_group_key(("team", "g"))


def test_bound_and_finished_members() -> None:
    assert member(pod(node="n1", phase="Running")).active
    assert not member(pod(node="n1", phase="Running")).pending
    assert not member(pod(node="n1", phase="Succeeded")).active


def test_the_pod_group_object_gives_the_size() -> None:
    group = parse_pod_group(
        {
            "kind": "PodGroup",
            "metadata": {"name": "g", "namespace": "team", "uid": "u"},
            "spec": {"minMember": 4, "scheduleTimeoutSeconds": 30},
        }
    )
    assert (group.min_member, group.schedule_timeout_seconds, group.uid) == (4, 30, "u")


def test_a_pod_group_with_a_bad_size_names_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.minMember"):
        parse_pod_group({"metadata": {"name": "g", "namespace": "t"}, "spec": {"minMember": 0}})


TAINT_TOLERATION = Toleration("gpu", TolerationOperator.Exists)
OTHER_TOLERATION = Toleration("spot", TolerationOperator.Exists)


def term(key: str, *values: str) -> NodeSelectorTerm:
    return NodeSelectorTerm((SelectorRequirement(key, SelectorOperator.In, values),))


def test_identical_members_keep_their_requirements() -> None:
    one = PodRequirements.of({"nvidia.com/gpu": 2})
    assert strictest([one, one, one]) is one


def test_members_that_differ_are_judged_by_the_strictest_of_them() -> None:
    leader = PodRequirements.of(
        {"cpu": 4000},
        tolerations=(TAINT_TOLERATION, OTHER_TOLERATION),
        node_selector={"zone": "a"},
        host_ports=(HostPort(29500),),
    )
    worker = PodRequirements.of(
        {"nvidia.com/gpu": 8, "cpu": 1000},
        tolerations=(TAINT_TOLERATION,),
        node_selector={"pool": "h100"},
        required_terms=(term("rack", "r1", "r2"),),
    )
    merged = strictest([leader, worker])
    assert dict(merged.requests) == {"cpu": 4000, "nvidia.com/gpu": 8}
    assert merged.tolerations == (TAINT_TOLERATION,)
    assert dict(merged.node_selector) == {"pool": "h100", "zone": "a"}
    assert merged.host_ports == (HostPort(29500),)
    assert merged.required_terms == (term("rack", "r1", "r2"),)


def test_required_affinities_of_different_members_must_all_hold() -> None:
    a = PodRequirements.of({}, required_terms=(term("zone", "a"), term("zone", "b")))
    b = PodRequirements.of({}, required_terms=(term("pool", "x"),))
    merged = strictest([a, b])
    assert merged.required_terms is not None
    assert len(merged.required_terms) == 2
    for combined in merged.required_terms:
        keys = {e.key for e in combined.match_expressions}
        assert keys == {"zone", "pool"}


def test_affinities_that_multiply_too_far_are_refused() -> None:
    many = [
        PodRequirements.of({}, required_terms=tuple(term(f"k{i}", str(j)) for j in range(5)))
        for i in range(4)
    ]
    with pytest.raises(ValueError, match="differ too much"):
        strictest(many)


def test_the_policy_comes_from_the_annotations() -> None:
    pods = [
        member(
            pod(
                f"w-{i}",
                annotations={
                    "tsunagu.io/dataset": "scans",
                    "tsunagu.io/max-rtt-ms": "12.5",
                    "tsunagu.io/max-throughput-loss": "0.1",
                    "tsunagu.io/objective": "Cheapest",
                    "tsunagu.io/workload-class": "llm-ft",
                    "tsunagu.io/min-member": "2",
                },
            )
        )
        for i in range(2)
    ]
    policy = group_policy("team", "g", pods)
    assert policy.dataset == "scans"
    assert policy.placement.max_rtt_ms == 12.5
    assert policy.placement.max_throughput_loss == 0.1
    assert policy.placement.objective is Objective.Cheapest
    assert policy.placement.mode is PlacementMode.Bind
    assert policy.workload_class == "llm-ft"
    assert policy.min_member == 2


@pytest.mark.parametrize(
    ("annotations", "named"),
    [
        ({"tsunagu.io/max-rtt-ms": "fast"}, "tsunagu.io/max-rtt-ms"),
        ({"tsunagu.io/max-rtt-ms": "-1"}, "tsunagu.io/max-rtt-ms"),
        ({"tsunagu.io/max-throughput-loss": "2"}, "tsunagu.io/max-throughput-loss"),
        ({"tsunagu.io/objective": "Soonest"}, "tsunagu.io/objective"),
        ({"tsunagu.io/min-member": "0"}, "tsunagu.io/min-member"),
        ({"tsunagu.io/min-member": "two"}, "tsunagu.io/min-member"),
    ],
)
def test_a_bad_annotation_is_named(annotations: dict[str, str], named: str) -> None:
    with pytest.raises(SpecError, match=named.replace(".", r"\.")):
        group_policy("team", "g", [member(pod(annotations=annotations))])


def test_members_that_disagree_are_refused_naming_the_annotation() -> None:
    pods = [
        member(pod("w-0", annotations={"tsunagu.io/dataset": "a"})),
        member(pod("w-1", annotations={"tsunagu.io/dataset": "b"})),
    ]
    with pytest.raises(SpecError, match=r"tsunagu\.io/dataset.*disagree"):
        group_policy("team", "g", pods)


def test_status_follows_the_members() -> None:
    pending = member(pod("a"))
    bound = member(pod("b", node="n1"))
    running = member(pod("c", node="n1", phase="Running"))
    done = member(pod("d", node="n1", phase="Succeeded"))
    failed = member(pod("e", node="n1", phase="Failed"))
    assert group_status(2, [pending, bound])["phase"] == "Pending"
    assert group_status(2, [bound, bound])["phase"] == "Scheduled"
    assert group_status(2, [running, running])["phase"] == "Running"
    assert group_status(2, [done, done])["phase"] == "Finished"
    assert group_status(2, [failed, done])["phase"] == "Failed"
    counts = group_status(2, [pending, bound, running, done, failed])
    assert {k: counts[k] for k in ("scheduled", "running", "succeeded", "failed")} == {
        "scheduled": 4, "running": 1, "succeeded": 1, "failed": 1,
    }  # fmt: skip


def test_the_gang_is_one_replica_per_waiting_member() -> None:
    key = group_key("team", "g")
    pods = [member(pod(f"w-{i}", gpus=2 + i, priority=i)) for i in range(3)]
    policy = group_policy("team", "g", pods)
    gang = gang_of(key, pods, policy)
    assert gang.key == key
    assert (gang.replicas, gang.gpus_per_replica, gang.priority) == (3, 4, 2)
    kept = gang_of(key, pods, policy, keep_to="osaka", regions=["osaka", "tokyo", "kyushu"])
    assert kept.placement.excluded_regions == ("kyushu", "tokyo")


def test_the_engine_decides_a_gang_of_members(snapshot_two_regions: ClusterSnapshot) -> None:
    key = group_key("team", "g")
    pods = [member(pod(f"w-{i}", gpus=4)) for i in range(2)]
    decision = decide(gang_of(key, pods, group_policy("team", "g", pods)), snapshot_two_regions)
    assert decision.placed
    assert len(decision.nodes) == 2


def test_a_gang_of_members_without_gpus_is_decided_too(
    snapshot_two_regions: ClusterSnapshot,
) -> None:
    key = group_key("team", "g")
    pods = [member(pod(f"w-{i}", gpus=0)) for i in range(3)]
    decision = decide(gang_of(key, pods, group_policy("team", "g", pods)), snapshot_two_regions)
    assert decision.placed
    assert len(decision.nodes) == 3


@pytest.fixture
def snapshot_two_regions() -> ClusterSnapshot:
    regions = [fixtures.region("tokyo"), fixtures.region("osaka")]
    nodes = [fixtures.node(f"{r}-{i}", r, 8) for r in ("tokyo", "osaka") for i in range(2)]
    return fixtures.snapshot(regions, nodes)
