"""Pod groups of other controllers on the real API server: an Indexed Job's pods, created by
kube-controller-manager's Job controller, name tsunagu as scheduler and carry scheduler-plugins'
pod-group label; tsunagu binds them as one gang into a region their dataset allows, says why
when it cannot, and places the pods the controller recreates beside the rest of the group."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    dataset,
    events_for,
    fill_region,
    node_regions,
    set_outcome,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GROUP_LABEL = "scheduling.x-k8s.io/pod-group"


def pod_group(namespace: str, name: str, min_member: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"minMember": min_member},
    }


def member_template(group: str, gpus: int, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {GROUP_LABEL: group}, "annotations": annotations},
        "spec": {
            "schedulerName": "tsunagu",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "trainer:latest",
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ],
        },
    }


def indexed_job(
    namespace: str, name: str, parallelism: int, gpus: int, **annotations: str
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "completionMode": "Indexed",
            "completions": parallelism,
            "parallelism": parallelism,
            "backoffLimit": 4,
            "template": member_template(name, gpus, **annotations),
        },
    }


def plain_member(namespace: str, name: str, group: str, gpus: int, **annotations: str) -> Any:
    template = member_template(group, gpus, **annotations)
    template["metadata"]["name"] = name
    template["metadata"]["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", **template}


def group_pods(cluster: Cluster, namespace: str, group: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"{GROUP_LABEL}={group}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def bound_regions(cluster: Cluster, pods: list[dict[str, Any]]) -> Counter[str]:
    regions = node_regions(cluster)
    return Counter(regions.get(p["spec"].get("nodeName") or "", "") for p in pods)


def all_bound(cluster: Cluster, namespace: str, group: str, count: int) -> Any:
    pods = group_pods(cluster, namespace, group)
    if len(pods) == count and all(p["spec"].get("nodeName") for p in pods):
        return pods
    return None


def reasons(cluster: Cluster, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events_for(cluster, namespace, name)]


def failed_scheduling(cluster: Cluster, namespace: str, pod: str) -> str | None:
    """The message of the pod's FailedScheduling Event, if it has one."""
    return next(
        (e["message"] for e in events_for(cluster, namespace, pod)
         if e["reason"] == "FailedScheduling"),
        None,
    )  # fmt: skip


def test_an_indexed_job_is_bound_as_one_gang_in_the_region_its_dataset_allows(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "scans", "osaka", "Pinned"))
    cluster.apply(pod_group(namespace, "ft", 4))
    cluster.apply(indexed_job(namespace, "ft", 4, 4, **{"tsunagu.io/dataset": "scans"}))

    pods = wait_until(lambda: all_bound(cluster, namespace, "ft", 4), timeout=60)

    assert bound_regions(cluster, pods) == Counter({"osaka": 4})
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in pods}
    assert owners == {"Job"}, "the pods are the Job controller's, not tsunagu's"
    assert_no_gpu_overcommitted(cluster)
    group = wait_until(
        lambda: (
            body
            if (body := cluster.get_json("podgroup", "ft", "-n", namespace))
            .get("status", {})
            .get("phase")
            in ("Scheduled", "Running")
            else None
        ),
        timeout=30,
    )
    annotations = group["metadata"]["annotations"]
    assert annotations["tsunagu.io/region"] == "osaka"
    assert annotations["tsunagu.io/reason"] == "Placed"
    assert group["status"]["scheduled"] == 4
    assert "Scheduled" in reasons(cluster, namespace, pods[0]["metadata"]["name"])
    wait_until(lambda: "Placed" in reasons(cluster, namespace, "ft"), timeout=15)


def test_a_group_that_fits_nowhere_binds_nothing_and_says_why(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "ledger", "hiroshima", "Pinned"))
    fill_region(cluster, namespace, "hiroshima")
    cluster.apply(pod_group(namespace, "big", 2))
    members = [
        plain_member(namespace, f"big-{i}", "big", 2, **{"tsunagu.io/dataset": "ledger"})
        for i in range(2)
    ]
    cluster.apply(members)

    def failed_scheduling() -> Any:
        found = [reasons(cluster, namespace, f"big-{i}") for i in range(2)]
        return found if all("FailedScheduling" in r for r in found) else None

    wait_until(failed_scheduling, timeout=30)
    pods = group_pods(cluster, namespace, "big")
    assert [p["spec"].get("nodeName") for p in pods] == [None, None]
    message = next(
        e["message"]
        for e in events_for(cluster, namespace, "big-0")
        if e["reason"] == "FailedScheduling"
    )
    assert "hiroshima" in message
    group = cluster.get_json("podgroup", "big", "-n", namespace)
    assert group["metadata"]["annotations"]["tsunagu.io/reason"] not in ("", "Placed")
    assert group["status"]["phase"] == "Pending"


def test_a_group_waits_for_min_member_pods_then_binds_them_together(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(pod_group(namespace, "trio", 3))
    cluster.apply([plain_member(namespace, f"trio-{i}", "trio", 1) for i in range(2)])

    def waiting_said() -> bool:
        return any(
            e["reason"] == "FailedScheduling" and "WaitingForPods: 2 of 3 pods" in e["message"]
            for e in events_for(cluster, namespace, "trio-0")
        ) and "WaitingForPods" in reasons(cluster, namespace, "trio")

    wait_until(waiting_said, timeout=30)
    assert all(not p["spec"].get("nodeName") for p in group_pods(cluster, namespace, "trio"))

    cluster.apply(plain_member(namespace, "trio-2", "trio", 1))
    pods = wait_until(lambda: all_bound(cluster, namespace, "trio", 3), timeout=30)
    assert len(bound_regions(cluster, pods)) == 1, "one gang, one region"


def test_without_a_pod_group_the_annotation_gives_the_size_and_bad_values_are_named(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    sized = {"tsunagu.io/min-member": "2"}
    cluster.apply([plain_member(namespace, f"duo-{i}", "duo", 1, **sized) for i in range(2)])
    wait_until(lambda: all_bound(cluster, namespace, "duo", 2), timeout=30)

    bad = {"tsunagu.io/min-member": "1", "tsunagu.io/max-rtt-ms": "fast"}
    cluster.apply(plain_member(namespace, "odd-0", "odd", 1, **bad))

    message = wait_until(lambda: failed_scheduling(cluster, namespace, "odd-0"), timeout=30)
    assert "tsunagu.io/max-rtt-ms" in message
    assert "InvalidSpec" in message
    assert not group_pods(cluster, namespace, "odd")[0]["spec"].get("nodeName")


def test_a_member_recreated_by_its_job_lands_beside_the_rest_of_its_group(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # The cheapest region is full when the group is placed, free when a member is recreated:
    # alone, the new pod would go there; beside its group, it stays where the group runs.
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess"))
    fillers = fill_region(cluster, namespace, "hokkaido")
    cluster.apply(pod_group(namespace, "ring", 3))
    annotations = {"tsunagu.io/dataset": "corpus", "tsunagu.io/objective": "Cheapest"}
    cluster.apply(indexed_job(namespace, "ring", 3, 2, **annotations))
    first = wait_until(lambda: all_bound(cluster, namespace, "ring", 3), timeout=60)
    (region,) = bound_regions(cluster, first)
    assert region != "hokkaido"
    cluster.kubectl("delete", "pods", "-n", namespace, "--wait", *fillers)
    failed = first[0]["metadata"]["name"]

    set_outcome(cluster, namespace, failed, "Failed")

    def replaced() -> Any:
        pods = [
            p
            for p in group_pods(cluster, namespace, "ring")
            if p["status"].get("phase") != "Failed"
        ]
        names = {p["metadata"]["name"] for p in pods}
        if len(pods) == 3 and failed not in names and all(p["spec"].get("nodeName") for p in pods):
            return pods
        return None

    pods = wait_until(replaced, timeout=60)
    assert bound_regions(cluster, pods) == Counter({region: 3})
    assert_no_gpu_overcommitted(cluster)


def test_a_recreated_member_that_no_longer_fits_its_groups_region_goes_where_it_fits(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess"))
    cluster.apply(pod_group(namespace, "pair", 2))
    cluster.apply(indexed_job(namespace, "pair", 2, 8, **{"tsunagu.io/dataset": "corpus"}))
    first = wait_until(lambda: all_bound(cluster, namespace, "pair", 2), timeout=60)
    (region,) = bound_regions(cluster, first)
    failed = first[0]["metadata"]["name"]
    # The region fills up before the controller's new pod arrives.
    nodes = [n for n, r in node_regions(cluster).items() if r == region]
    held = {p["spec"]["nodeName"] for p in first}
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"other-{node}", "namespace": namespace},
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "c",
                            "image": "busy",
                            "resources": {"limits": {"nvidia.com/gpu": 8}},
                        }
                    ],
                },
            }
            for node in nodes
            if node not in held
        ]
    )

    def replaced() -> Any:
        pods = group_pods(cluster, namespace, "pair")
        live = [p for p in pods if p["metadata"]["name"] != failed]
        if len(live) == 2 and all(p["spec"].get("nodeName") for p in live):
            return live
        return None

    freed = first[0]["spec"]["nodeName"]
    cluster.kubectl("cordon", freed)
    try:
        set_outcome(cluster, namespace, failed, "Failed")
        pods = wait_until(replaced, timeout=60)
    finally:
        cluster.kubectl("uncordon", freed)
    assert len(bound_regions(cluster, pods)) == 2, "the new member went where it fits"
    assert_no_gpu_overcommitted(cluster)


def test_a_pod_that_names_tsunagu_and_no_group_is_placed_alone_by_its_dataset(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "notes", "fukuoka", "Pinned"))
    solo = plain_member(namespace, "solo", "unused", 2, **{"tsunagu.io/dataset": "notes"})
    del solo["metadata"]["labels"][GROUP_LABEL]
    cluster.apply(solo)

    def bound() -> Any:
        body = cluster.get_json("pod", "solo", "-n", namespace)
        return body if body["spec"].get("nodeName") else None

    body = wait_until(bound, timeout=30)
    assert node_regions(cluster)[body["spec"]["nodeName"]] == "fukuoka"
    assert "Scheduled" in reasons(cluster, namespace, "solo")


def test_members_are_bound_only_where_their_node_rules_allow(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    osaka = sorted(n for n, r in node_regions(cluster).items() if r == "osaka")
    cluster.kubectl("taint", "nodes", *osaka[1:], "dedicated=infer:NoSchedule")
    try:
        cluster.apply(dataset(namespace, "scans", "osaka", "Pinned"))
        cluster.apply(pod_group(namespace, "tight", 2))
        members = [
            plain_member(namespace, f"tight-{i}", "tight", 4, **{"tsunagu.io/dataset": "scans"})
            for i in range(2)
        ]
        cluster.apply(members)
        pods = wait_until(lambda: all_bound(cluster, namespace, "tight", 2), timeout=30)
        assert {p["spec"]["nodeName"] for p in pods} == {osaka[0]}, "only the untainted node"

        cluster.apply(pod_group(namespace, "more", 2))
        cluster.apply(
            [
                plain_member(namespace, f"more-{i}", "more", 4, **{"tsunagu.io/dataset": "scans"})
                for i in range(2)
            ]
        )

        message = wait_until(lambda: failed_scheduling(cluster, namespace, "more-0"), timeout=30)
        assert "dedicated" in message or "taint" in message.lower(), message
        assert not any(p["spec"].get("nodeName") for p in group_pods(cluster, namespace, "more"))
        assert_no_gpu_overcommitted(cluster)
    finally:
        cluster.kubectl("taint", "nodes", *osaka[1:], "dedicated-", check=False)
