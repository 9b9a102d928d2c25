"""A TrainingJob's life on a real cluster: completion, restarts up to backoffLimit, deletion,
and crash safety of the operator itself (kill -9 in the middle of a burst)."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable

import pytest

from tests.support.cluster import HACK, Cluster, OperatorProcess
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    assert_no_pod_duplicated,
    condition,
    dataset,
    events_for,
    free_port,
    job,
    job_pods,
    region_nodes,
    set_outcome,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def running_pods(cluster: Cluster, namespace: str, name: str, replicas: int) -> list[dict]:
    pods = job_pods(cluster, namespace, name)
    ok = len(pods) == replicas and all(p["status"].get("phase") == "Running" for p in pods)
    return pods if ok else []


def test_all_replicas_succeeding_finishes_the_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "done", "d", replicas=2))
    pods = wait_until(lambda: running_pods(cluster, namespace, "done", 2), message="Running")
    wait_condition(cluster, namespace, "done", "Running", "True", "PodsRunning")

    for pod in pods:
        set_outcome(cluster, namespace, pod["metadata"]["name"], "Succeeded")
    body = wait_condition(cluster, namespace, "done", "Finished", "True", "Succeeded")
    assert body["status"]["succeededReplicas"] == 2
    assert body["status"]["completionTime"]
    assert body["status"]["startTime"]
    assert condition(body, "Running")["status"] == "False"


def test_a_failed_replica_recreates_the_gang_then_fails_after_backoff_limit(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    body = training_job(namespace, "flaky", "d", replicas=2)
    body["spec"]["backoffLimit"] = 1
    cluster.apply(body)
    first = wait_until(lambda: running_pods(cluster, namespace, "flaky", 2), message="Running")
    first_uids = {p["metadata"]["uid"] for p in first}

    set_outcome(cluster, namespace, "flaky-1", "Failed")

    def recreated() -> list[dict]:
        pods = running_pods(cluster, namespace, "flaky", 2)
        return pods if pods and not first_uids & {p["metadata"]["uid"] for p in pods} else []

    second = wait_until(recreated, timeout=60, message="the gang to be recreated")
    assert job(cluster, namespace, "flaky")["status"]["restarts"] == 1

    set_outcome(cluster, namespace, second[0]["metadata"]["name"], "Failed")
    final = wait_condition(cluster, namespace, "flaky", "Finished", "True", "Failed")
    assert final["status"]["restarts"] == 1

    def live_pods_gone() -> bool:
        pods = job_pods(cluster, namespace, "flaky")
        return all(p["status"].get("phase") in ("Succeeded", "Failed") for p in pods)

    wait_until(live_pods_gone, message="the failed job to release its GPUs")


def test_deleting_a_job_removes_its_pods_and_service(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "tokyo", "Pinned"))
    cluster.apply(training_job(namespace, "short", "d", replicas=2))
    wait_until(lambda: running_pods(cluster, namespace, "short", 2), message="Running")
    assert cluster.kubectl("get", "service", "short", "-n", namespace).returncode == 0

    cluster.kubectl("delete", "trainingjob", "short", "-n", namespace)

    def children_gone() -> bool:
        service = cluster.kubectl(
            "get", "service", "short", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return not job_pods(cluster, namespace, "short") and not service.stdout.strip()

    wait_until(children_gone, timeout=60, message="pods and Service to be garbage-collected")


def test_kill_9_in_the_middle_of_a_burst_leaves_no_duplicate_and_no_overcommit(
    cluster: Cluster, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
    operator = start_operator()
    cluster.apply(
        [
            training_job(namespace, f"crash-{i:02d}", "shared", replicas=1 + i % 4, gpus=8)
            for i in range(20)
        ]
    )
    for _ in range(3):
        # Kill as soon as the first pods appear: the burst is then surely mid-way.
        wait_until(
            lambda: cluster.get_json("pods", "-n", namespace)["items"],
            timeout=60, interval=0.05, message="the first pods of the burst",
        )  # fmt: skip
        operator.kill()
        assert_no_pod_duplicated(cluster, namespace)
        assert_no_gpu_overcommitted(cluster)
        operator = start_operator()

    def settled() -> bool:
        items = cluster.get_json("trainingjobs", "-n", namespace)["items"]
        services = {
            s["metadata"]["name"] for s in cluster.get_json("services", "-n", namespace)["items"]
        }
        for item in items:
            scheduled = condition(item, "Scheduled")
            if scheduled is None:
                return False
            pods = job_pods(cluster, namespace, item["metadata"]["name"])
            if scheduled["status"] == "True":
                ok = len(pods) == item["spec"]["replicas"] and all(
                    p["spec"].get("nodeName") and p["status"].get("phase") == "Running"
                    for p in pods
                )
                # A gang adopted after a crash gets the Service it may not have had yet.
                if not ok or item["metadata"]["name"] not in services:
                    return False
            elif pods or scheduled["reason"] not in ("InsufficientCapacity", "LatencyBudget"):
                return False
        return len(items) == 20

    wait_until(
        settled, timeout=180, message="every job placed and Running, or pending with a reason"
    )
    assert_no_pod_duplicated(cluster, namespace)
    assert_no_gpu_overcommitted(cluster)


def test_losing_the_region_requeues_its_jobs_elsewhere(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "tokyo", "RemoteAccess"))
    cluster.apply(training_job(namespace, "evacuee", "d", replicas=2))
    placed = wait_condition(cluster, namespace, "evacuee", "Running", "True", "PodsRunning")
    first_region = placed["status"]["region"]
    lost = region_nodes(cluster, first_region)
    try:
        cluster.kubectl("delete", "node", *lost, "--wait=false")

        def moved() -> bool:
            status = job(cluster, namespace, "evacuee").get("status", {})
            pods = running_pods(cluster, namespace, "evacuee", 2)
            return status.get("region") not in (None, first_region) and bool(pods)

        wait_until(moved, timeout=90, message="the job to be requeued into another region")
        reasons = {e["reason"] for e in events_for(cluster, namespace, "evacuee")}
        assert "Requeued" in reasons
        assert all(
            p["spec"]["nodeName"] not in lost for p in job_pods(cluster, namespace, "evacuee")
        )
    finally:
        restore = subprocess.run(
            [str(HACK / "cluster.sh"), "nodes"], capture_output=True, text=True, check=False
        )
        assert restore.returncode == 0, restore.stderr


def test_operator_exports_metrics_and_region_status(
    cluster: Cluster, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    port = free_port()
    start_operator("--metrics-port", str(port))
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "counted", "d", replicas=1))
    wait_condition(cluster, namespace, "counted", "Scheduled", "True", "Placed")

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    text = wait_until(
        lambda: (
            'tsunagu_placements_total{outcome="Placed",region="osaka"}' in metrics() and metrics()
        ),
        message="the placement to be counted",
    )
    for name in (
        "tsunagu_decision_duration_seconds_bucket",
        "tsunagu_queue_length",
        "tsunagu_gang_bind_duration_seconds_count",
        "tsunagu_predicted_throughput_loss",
        "tsunagu_reports_pending",
    ):
        assert name in text  # fmt: skip

    def osaka_allocated() -> dict:
        status = cluster.get_json("region", "osaka").get("status") or {}
        return status if status.get("gpuAllocated", 0) >= 8 else {}

    status = wait_until(osaka_allocated, message="Region.status to count the job's GPUs")
    assert status["gpuAllocatable"] == status["gpuCapacity"] == 32
    assert status["gpuFree"] == status["gpuAllocatable"] - status["gpuAllocated"]
    assert status["readyNodes"] == 4
    assert status["gpus"] == f"{status['gpuFree']}/{status['gpuAllocatable']}"
