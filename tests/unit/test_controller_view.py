"""The view of one cluster: every pod counts on its node whatever its scheduler, and a NotReady
node loses its pods only after the grace period (a deleted node at once)."""

from __future__ import annotations

from typing import Any

from tsunagu.controller.cluster.view import ClusterView


def node(name: str, ready: str = "True", since: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": "osaka"}},
        "status": {
            "allocatable": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}],
        },
    }


def pod(name: str, node_name: str | None, phase: str = "Running", **requests: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"requests": dict(requests)}}],
        },
        "status": {"phase": phase},
    }


SINCE = 1_796_119_200.0  # 2026-12-01T10:00:00Z


def test_every_bound_pod_counts_with_all_its_requests() -> None:
    view = ClusterView()
    view.upsert_node(node("n1"))
    view.upsert_pod(pod("daemon", "n1", cpu="500m", memory="1Gi"))
    view.upsert_pod(pod("gpu", "n1", **{"nvidia.com/gpu": "2", "cpu": "4"}))
    view.upsert_pod(pod("done", "n1", phase="Succeeded", cpu="90"))
    view.upsert_pod(pod("pending", None, cpu="90"))
    usage = view.node_usage()
    assert usage["n1"]["cpu"] == 4500
    assert usage["n1"]["memory"] == 2**30
    assert usage["n1"]["nvidia.com/gpu"] == 2
    assert usage["n1"]["pods"] == 2


def test_a_notready_node_loses_its_pods_only_after_the_grace() -> None:
    view = ClusterView()
    view.upsert_node(node("n1", ready="False"))
    assert not view.node_alive("n1")
    assert view.node_lost_in("n1", 300, SINCE + 10) == 290
    assert view.node_lost_in("n1", 300, SINCE + 301) == 0
    view.upsert_node(node("n1"))
    assert view.node_lost_in("n1", 300, SINCE + 400) == float("inf")
    view.delete_node("n1")
    assert view.node_lost_in("n1", 300, SINCE) == 0
