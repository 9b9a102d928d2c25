"""Building blocks of operator scenarios on the test cluster: regions, datasets, jobs, fillers
that occupy GPUs, and the checks every scenario ends with (no GPU over-committed)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

from tests.support.cluster import HACK, Cluster
from tests.support.waiting import wait_until

TOPOLOGY = HACK / "topology" / "japan.yaml"
OUTCOME_ANNOTATION = "tsunagu.io/simulated-outcome"


def japan_regions() -> list[dict[str, Any]]:
    output = subprocess.run(
        [sys.executable, str(HACK / "topology.py"), "regions", str(TOPOLOGY)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return list(json.loads(output)["items"])


def dataset(namespace: str, name: str, home: str, mode: str, **residency: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "homeRegion": home,
            "residency": {"mode": mode, **residency},
            "access": {"endpoint": f"nfs://{home}.example/{name}"},
            "sizeGiB": 100,
        },
    }


def training_job(
    namespace: str,
    name: str,
    dataset_name: str | None,
    replicas: int = 4,
    gpus: int = 8,
    **placement: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "gpusPerReplica": gpus,
        "placement": {"mode": "Bind", **placement},
        "template": {"spec": {"containers": [{"name": "trainer", "image": "trainer:latest"}]}},
    }
    if dataset_name is not None:
        spec["datasetRef"] = {"name": dataset_name}
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def region_nodes(cluster: Cluster, region: str) -> list[str]:
    nodes = cluster.get_json("nodes", "-l", f"topology.kubernetes.io/region={region}")["items"]
    return sorted(node["metadata"]["name"] for node in nodes)


def fill_region(
    cluster: Cluster, namespace: str, region: str, only_free: bool = False
) -> list[str]:
    """Occupies every GPU of a region with pods bound straight to its nodes (`only_free`: of
    the nodes whose GPUs are all free, leaving the others as they are)."""
    nodes = region_nodes(cluster, region)
    if only_free:
        free = free_gpus_by_node(cluster)
        nodes = [node for node in nodes if free.get(node) == 8]
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"filler-{node}", "namespace": namespace},
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": "busy",
                        "image": "busy",
                        "resources": {"limits": {"nvidia.com/gpu": "8"}},
                    }
                ],
            },
        }
        for node in nodes
    ]
    cluster.apply(pods)
    return [pod["metadata"]["name"] for pod in pods]


def job(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get_json("trainingjob", name, "-n", namespace))


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def wait_condition(
    cluster: Cluster, namespace: str, name: str, type_: str, status: str,
    reason: str | None = None, timeout: float = 60,
) -> dict[str, Any]:  # fmt: skip
    """Waits for a condition of a TrainingJob; on timeout, says which conditions it had."""
    seen: list[Any] = []

    def reached() -> dict[str, Any] | None:
        body = job(cluster, namespace, name)
        seen[:] = [(c["type"], c["status"], c["reason"]) for c in body["status"]["conditions"]]
        found = condition(body, type_)
        if found and found["status"] == status and (reason is None or found["reason"] == reason):
            return body
        return None

    try:
        return wait_until(reached, timeout=timeout, message=f"{name} {type_}={status} {reason}")
    except AssertionError as error:
        raise AssertionError(f"{error}; conditions were {seen}") from None


def job_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"tsunagu.io/job={name}")["items"]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def node_regions(cluster: Cluster) -> dict[str, str]:
    nodes = cluster.get_json("nodes")["items"]
    return {
        n["metadata"]["name"]: n["metadata"]["labels"].get("topology.kubernetes.io/region", "")
        for n in nodes
    }


def region_of(cluster: Cluster, namespace: str, name: str) -> set[str]:
    """The regions of the nodes a job's pods are bound to."""
    where = node_regions(cluster)
    return {where[p["spec"]["nodeName"]] for p in job_pods(cluster, namespace, name)}


def events_for(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    events = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return list(events)


def _gpu_accounting(cluster: Cluster) -> tuple[dict[str, int], dict[str, int]]:
    """(allocatable, used) GPUs per node, counted from the API independently of tsunagu's code."""
    allocatable = {
        n["metadata"]["name"]: int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0"))
        for n in cluster.get_json("nodes")["items"]
    }
    used: dict[str, int] = defaultdict(int)
    for pod in cluster.get_json("pods", "-A")["items"]:
        node = pod["spec"].get("nodeName")
        if not node or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            resources = container.get("resources") or {}
            limits = resources.get("requests") or resources.get("limits") or {}
            used[node] += int(limits.get("nvidia.com/gpu") or 0)
    return allocatable, used


def free_gpus_by_node(cluster: Cluster) -> dict[str, int]:
    allocatable, used = _gpu_accounting(cluster)
    return {node: gpus - used.get(node, 0) for node, gpus in allocatable.items()}


def assert_no_gpu_overcommitted(cluster: Cluster) -> None:
    """Checked node by node from the API: bound, non-terminal pods never exceed allocatable."""
    allocatable, used = _gpu_accounting(cluster)
    over = {
        node: (gpus, allocatable.get(node, 0))
        for node, gpus in used.items()
        if gpus > allocatable.get(node, 0)
    }
    assert not over, f"GPUs over-committed (used, allocatable): {over}"


def assert_no_pod_duplicated(cluster: Cluster, namespace: str) -> None:
    """Every rank of every job exists at most once, and each pod is bound to one node."""
    ranks: dict[tuple[str, str], int] = defaultdict(int)
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        labels = pod["metadata"].get("labels") or {}
        if "tsunagu.io/job" in labels and not pod["metadata"].get("deletionTimestamp"):
            ranks[(labels["tsunagu.io/job"], labels["tsunagu.io/rank"])] += 1
    duplicated = {key: count for key, count in ranks.items() if count > 1}
    assert not duplicated, f"ranks with more than one pod: {duplicated}"


def set_outcome(cluster: Cluster, namespace: str, pod: str, outcome: str) -> None:
    cluster.kubectl(
        "annotate", "pod", pod, "-n", namespace, f"{OUTCOME_ANNOTATION}={outcome}", "--overwrite"
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(operator: Any, liveness_port: int, timeout: float = 60) -> None:
    """Waits until the operator answers on /healthz (Kopf answers once start-up handlers ran)."""
    import urllib.request

    def healthy() -> bool:
        if not operator.running:
            raise AssertionError(f"the operator exited:\n{operator.output()[-4000:]}")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{liveness_port}/healthz", timeout=2
        ) as answer:
            return bool(answer.status == 200)

    wait_until(healthy, timeout=timeout, message="the operator to become healthy")


def job_and_its_objects_gone(cluster: Cluster, namespace: str, name: str) -> bool:
    """The TrainingJob is gone, and so is every anchor, pod and Service labelled as its."""
    left = cluster.kubectl(
        "get", "configmap,pods,services", "-n", namespace, "-o", "name",
        "-l", f"tsunagu.io/job={name}",
    ).stdout.split()  # fmt: skip
    job = cluster.kubectl("get", "trainingjob", "-n", namespace, name, check=False)
    return not left and job.returncode != 0
