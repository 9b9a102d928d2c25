"""The test cluster is real: kube-scheduler schedules, kube-controller-manager collects garbage,
and kwok's simulated GPU nodes carry their regions."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

EXPECTED_REGIONS = {"hokkaido", "tokyo", "osaka", "hiroshima", "fukuoka"}


def test_gpu_nodes_are_listed_with_their_regions(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes", "-l", "type=kwok")["items"]
    regions = {node["metadata"]["labels"]["topology.kubernetes.io/region"] for node in nodes}
    assert regions >= EXPECTED_REGIONS
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
    table = cluster.kubectl("get", "nodes", "-L", "topology.kubernetes.io/region").stdout
    assert "fukuoka" in table
    assert "tokyo" in table


def test_kube_scheduler_places_a_pod_in_the_selected_region(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "smoke", "namespace": namespace},
            "spec": {
                "nodeSelector": {"topology.kubernetes.io/region": "fukuoka"},
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ],
            },
        }
    )

    def running_pod() -> dict | None:
        pod = cluster.get_json("pod", "smoke", "-n", namespace)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = wait_until(running_pod, timeout=60, message="the smoke pod to be Running")
    node = cluster.get_json("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == "fukuoka"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "name"
    ).stdout
    assert events.strip(), "kube-scheduler recorded no Scheduled event"


def test_kube_controller_manager_collects_a_pod_whose_owner_is_gone(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = cluster.get_json("configmap", "owner", "-n", namespace)["metadata"]["uid"]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "dependent",
                "namespace": namespace,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
                ],
            },
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def dependent_gone() -> bool:
        found = cluster.kubectl(
            "get", "pod", "dependent", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return found.stdout.strip() == ""

    wait_until(dependent_gone, timeout=60, message="the garbage collector to delete the dependent")
