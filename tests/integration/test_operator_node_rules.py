"""Bind mode honours what kube-scheduler honours, on the real API server with kwok nodes (96
CPUs, 8 GPUs, 110 pods each): taints, the template's nodeSelector, every requested resource,
pods of other schedulers; and an over-committed node is reported and takes no new gang."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    condition,
    dataset,
    events_for,
    job_pods,
    region_nodes,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TAINT = "dedicated=infer:NoSchedule"


@pytest.fixture
def osaka(cluster: Cluster) -> Iterator[list[str]]:
    """Osaka's nodes; whatever a test taints there is untainted afterwards."""
    nodes = region_nodes(cluster, "osaka")
    yield nodes
    cluster.kubectl("taint", "nodes", *nodes, "dedicated-", check=False)


def bound_nodes(cluster: Cluster, namespace: str, name: str) -> list[str]:
    return [p["spec"].get("nodeName") for p in job_pods(cluster, namespace, name)]


def plain_pod(namespace: str, name: str, gpus: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": "busy", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
            ],
            **spec,
        },
    }


def test_a_taint_not_tolerated_keeps_the_gang_off_and_says_so(
    cluster: Cluster, namespace: str, operator: OperatorProcess, osaka: list[str]
) -> None:
    cluster.kubectl("taint", "nodes", *osaka[1:], TAINT)
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    body = training_job(namespace, "tainted", "d", replicas=4)
    cluster.apply(body)
    pending = wait_condition(
        cluster, namespace, "tainted", "Scheduled", "False", "InsufficientCapacity"
    )
    message = condition(pending, "Scheduled")["message"]
    assert "3 nodes tainted dedicated=infer:NoSchedule not tolerated" in message
    assert job_pods(cluster, namespace, "tainted") == []

    body["spec"]["template"]["spec"]["tolerations"] = [
        {"key": "dedicated", "operator": "Equal", "value": "infer", "effect": "NoSchedule"}
    ]
    cluster.apply(body)
    wait_condition(cluster, namespace, "tainted", "Scheduled", "True", "Placed")
    assert sorted(bound_nodes(cluster, namespace, "tainted")) == osaka


def test_the_templates_node_selector_and_every_resource_are_honoured(
    cluster: Cluster, namespace: str, operator: OperatorProcess, osaka: list[str]
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    chosen = training_job(namespace, "chosen", "d", replicas=1, gpus=1)
    chosen["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": osaka[2]}
    cluster.apply(chosen)
    wait_condition(cluster, namespace, "chosen", "Scheduled", "True", "Placed")
    assert bound_nodes(cluster, namespace, "chosen") == [osaka[2]]

    # Four pods of 60 CPUs: one per 96-CPU node, although each node has the GPUs for all four.
    heavy = training_job(namespace, "heavy", "d", replicas=4, gpus=1)
    heavy["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "60"}}
    cluster.apply(heavy)
    wait_condition(cluster, namespace, "heavy", "Scheduled", "True", "Placed")
    assert sorted(bound_nodes(cluster, namespace, "heavy")) == osaka

    more = training_job(namespace, "more", "d", replicas=1, gpus=1)
    more["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "60"}}
    cluster.apply(more)
    pending = wait_condition(
        cluster, namespace, "more", "Scheduled", "False", "InsufficientCapacity"
    )
    assert (
        "cpu: 60 requested, 36 free on the best node" in condition(pending, "Scheduled")["message"]
    )


def test_pods_of_the_default_scheduler_take_capacity(
    cluster: Cluster, namespace: str, operator: OperatorProcess, osaka: list[str]
) -> None:
    selector = {"topology.kubernetes.io/region": "osaka"}
    cluster.apply([plain_pod(namespace, f"other-{i}", 8, nodeSelector=selector) for i in range(3)])
    wait_until(
        lambda: all(
            p["spec"].get("nodeName")
            for p in cluster.get_json("pods", "-n", namespace)["items"]
        ),
        message="kube-scheduler to bind its pods",
    )  # fmt: skip
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "after", "d", replicas=2, gpus=8))
    cluster.apply(training_job(namespace, "fits", "d", replicas=1, gpus=8))
    # Three of four nodes are full of the default scheduler's pods: one 8-GPU pod still fits.
    wait_condition(cluster, namespace, "after", "Scheduled", "False", "InsufficientCapacity")
    wait_condition(cluster, namespace, "fits", "Scheduled", "True", "Placed")
    assert_no_gpu_overcommitted(cluster)


def test_an_overcommitted_node_is_reported_and_takes_no_new_gang(
    cluster: Cluster, namespace: str, operator: OperatorProcess, osaka: list[str]
) -> None:
    crowded = osaka[0]
    cluster.apply([plain_pod(namespace, f"bypass-{i}", 8, nodeName=crowded) for i in range(2)])

    def reported() -> dict[str, Any] | None:
        status = cluster.get_json("region", "osaka").get("status") or {}
        listed = status.get("overcommittedNodes") or []
        return status if any(entry.startswith(f"{crowded} (") for entry in listed) else None

    status = wait_until(reported, timeout=60, message="Region status to list the node")
    assert f"{crowded} (nvidia.com/gpu 16/8)" in status["overcommittedNodes"]
    assert status["gpuAllocated"] >= 16  # not clamped to what the node allocates
    events = wait_until(
        lambda: [e for e in events_for(cluster, "default", "osaka")
                 if e["reason"] == "NodeOvercommitted" and crowded in e["message"]],
        message="a NodeOvercommitted Event on the Region",
    )  # fmt: skip
    assert events[0]["type"] == "Warning"

    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "avoids", "d", replicas=3, gpus=8))
    wait_condition(cluster, namespace, "avoids", "Scheduled", "True", "Placed")
    assert crowded not in bound_nodes(cluster, namespace, "avoids")
    cluster.kubectl("delete", "pod", "bypass-0", "bypass-1", "-n", namespace, "--wait=false")


def test_the_gang_toleration_of_the_safe_set_up_lets_gangs_onto_tainted_gpu_nodes(
    cluster: Cluster,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
    osaka: list[str],
) -> None:
    """The safe set-up: GPU nodes tainted so only tsunagu's pods tolerate them."""
    start_operator("--gang-toleration", TAINT)
    cluster.kubectl("taint", "nodes", *osaka, TAINT)
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "tolerated", "d", replicas=2))
    wait_condition(cluster, namespace, "tolerated", "Scheduled", "True", "Placed")
    for pod in job_pods(cluster, namespace, "tolerated"):
        assert pod["spec"]["nodeName"] in osaka
        assert {"key": "dedicated", "operator": "Equal", "value": "infer",
                "effect": "NoSchedule"} in pod["spec"]["tolerations"]  # fmt: skip
    # Another scheduler's pod without the toleration stays off those nodes.
    selector = {"topology.kubernetes.io/region": "osaka"}
    cluster.apply(plain_pod(namespace, "outsider", 1, nodeSelector=selector))
    wait_until(
        lambda: any(
            c.get("reason") == "Unschedulable"
            for c in cluster.get_json("pod", "outsider", "-n", namespace)["status"].get(
                "conditions", []
            )
        ),
        message="kube-scheduler to leave the outsider pending",
    )
