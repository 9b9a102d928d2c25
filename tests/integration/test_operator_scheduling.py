"""The operator on a real cluster: overflow by residency and latency, gangs, bursts, Delegate
mode, and bad input that the schema cannot catch."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    condition,
    dataset,
    events_for,
    fill_region,
    free_gpus_by_node,
    job,
    job_pods,
    node_regions,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def regions_of_pods(cluster: Cluster, namespace: str, name: str) -> set[str]:
    where = node_regions(cluster)
    return {where[pod["spec"]["nodeName"]] for pod in job_pods(cluster, namespace, name)}


def all_running(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    pods = job_pods(cluster, namespace, name)
    return len(pods) == replicas and all(p["status"].get("phase") == "Running" for p in pods)


def test_remote_access_job_overflows_to_fukuoka_when_tokyo_is_full(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "claims", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))
    cluster.apply(training_job(namespace, "llm-ft", "claims", maxRttMs=20, maxThroughputLoss=0.15))

    body = wait_condition(cluster, namespace, "llm-ft", "Scheduled", "True", "Placed")
    wait_until(lambda: all_running(cluster, namespace, "llm-ft", 4), message="4 pods Running")
    assert regions_of_pods(cluster, namespace, "llm-ft") == {"fukuoka"}
    for pod in job_pods(cluster, namespace, "llm-ft"):
        assert pod["spec"]["schedulerName"] == "tsunagu"
    status = body["status"]
    assert status["region"] == "fukuoka"
    assert status["placement"]["rttMs"] == pytest.approx(15.0)
    assert status["placement"]["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.005)
    verdicts = {alt["region"]: alt["reason"] for alt in status["placement"]["alternatives"]}
    assert verdicts["tokyo"] == "InsufficientCapacity"
    assert verdicts["osaka"] == "DataResidency"
    reasons = {event["reason"] for event in events_for(cluster, namespace, "llm-ft")}
    assert "Placed" in reasons
    wait_condition(cluster, namespace, "llm-ft", "Running", "True", "PodsRunning")
    columns = cluster.kubectl("get", "tj", "llm-ft", "-n", namespace).stdout
    assert "fukuoka" in columns
    assert "Placed" in columns


def test_pinned_job_waits_for_home_then_runs_there_when_it_frees_up(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    fillers = fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "records", "tokyo", "Pinned"))
    cluster.apply(training_job(namespace, "pinned", "records"))

    body = wait_condition(
        cluster, namespace, "pinned", "Scheduled", "False", "InsufficientCapacity"
    )
    assert job_pods(cluster, namespace, "pinned") == []
    alternatives = {a["region"]: a["reason"] for a in body["status"]["placement"]["alternatives"]}
    assert alternatives["fukuoka"] == "DataResidency"
    reasons = {event["reason"] for event in events_for(cluster, namespace, "pinned")}
    assert "InsufficientCapacity" in reasons, "the Event carries the condition's reason"

    cluster.kubectl("delete", "pod", *fillers, "-n", namespace, "--wait=false")
    wait_condition(cluster, namespace, "pinned", "Scheduled", "True", "Placed")
    wait_until(lambda: all_running(cluster, namespace, "pinned", 4), message="pinned job Running")
    assert regions_of_pods(cluster, namespace, "pinned") == {"tokyo"}


def test_a_gang_that_fits_nowhere_binds_no_pod(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "big", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "too-big", "big", replicas=5))

    wait_condition(cluster, namespace, "too-big", "Scheduled", "False", "InsufficientCapacity")
    assert job_pods(cluster, namespace, "too-big") == []


def test_burst_of_fifty_jobs_never_overcommits_a_node(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
    jobs = [
        training_job(namespace, f"burst-{i:02d}", "shared", replicas=1 + i % 3, gpus=(4, 8)[i % 2])
        for i in range(50)
    ]
    cluster.apply(jobs)

    def settled() -> bool:
        for item in cluster.get_json("trainingjobs", "-n", namespace)["items"]:
            scheduled = condition(item, "Scheduled")
            if scheduled is None:
                return False
            if scheduled["status"] == "True" and not condition(item, "Running"):
                return False
        return True

    wait_until(settled, timeout=120, message="every job placed or pending with a reason")
    assert_no_gpu_overcommitted(cluster)
    where = node_regions(cluster)
    free = free_gpus_by_node(cluster)
    placed = pending = 0
    for item in cluster.get_json("trainingjobs", "-n", namespace)["items"]:
        scheduled = condition(item, "Scheduled")
        assert scheduled is not None
        pods = job_pods(cluster, namespace, item["metadata"]["name"])
        if scheduled["status"] == "True":
            placed += 1
            assert len(pods) == item["spec"]["replicas"]
            assert len({where[p["spec"]["nodeName"]] for p in pods}) == 1, "a gang spans regions"
        else:
            pending += 1
            assert pods == []
            assert scheduled["reason"] == "InsufficientCapacity"
            # Pending for capacity must be true: no region could take the gang right now.
            replicas, gpus = item["spec"]["replicas"], item["spec"]["gpusPerReplica"]
            for region in set(where.values()) - {""}:
                slots = sum(f // gpus for n, f in free.items() if where[n] == region)
                assert slots < replicas, f"{item['metadata']['name']} would fit in {region}"
    assert placed >= 10, f"only {placed} of 50 placed"
    assert placed + pending == 50


def test_delegate_mode_lets_kube_scheduler_place_pods_inside_the_region(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "logs", "hokkaido", "Pinned"))
    cluster.apply(training_job(namespace, "delegated", "logs", replicas=2, gpus=4, mode="Delegate"))

    wait_condition(cluster, namespace, "delegated", "Scheduled", "True", "Placed")
    wait_until(lambda: all_running(cluster, namespace, "delegated", 2), message="delegated Running")
    for pod in job_pods(cluster, namespace, "delegated"):
        assert pod["spec"].get("schedulerName") == "default-scheduler"
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][-1]["values"] == ["hokkaido"]
    assert regions_of_pods(cluster, namespace, "delegated") == {"hokkaido"}
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=Scheduled")
    scheduled_by = {
        e.get("reportingComponent") or e.get("source", {}).get("component") for e in events["items"]
    }
    assert "default-scheduler" in scheduled_by


def test_missing_dataset_is_reported_and_fixing_it_unsticks_the_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(training_job(namespace, "orphan", "not-yet", replicas=1))
    body = wait_condition(cluster, namespace, "orphan", "Scheduled", "False", "DatasetNotFound")
    assert "not-yet" in condition(body, "Scheduled")["message"]
    assert "DatasetNotFound" in {e["reason"] for e in events_for(cluster, namespace, "orphan")}
    assert operator.running

    cluster.apply(dataset(namespace, "not-yet", "osaka", "Pinned"))
    wait_condition(cluster, namespace, "orphan", "Scheduled", "True", "Placed")
    assert regions_of_pods(cluster, namespace, "orphan") == {"osaka"}


def test_dataset_in_another_namespace_is_not_found(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    other = f"{namespace}-other"
    cluster.kubectl("create", "namespace", other)
    try:
        cluster.apply(dataset(other, "elsewhere", "tokyo", "RemoteAccess"))
        cluster.apply(training_job(namespace, "cross", "elsewhere", replicas=1))
        wait_condition(cluster, namespace, "cross", "Scheduled", "False", "DatasetNotFound")
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false")


def test_home_region_that_does_not_exist_is_reported_and_fixing_it_unsticks_the_job(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "nowhere", "atlantis", "Pinned"))
    cluster.apply(training_job(namespace, "lost", "nowhere", replicas=1))
    body = wait_condition(cluster, namespace, "lost", "Scheduled", "False")
    message = condition(body, "Scheduled")["message"]
    assert condition(body, "Scheduled")["reason"] in (
        "DataResidency",
        "NoRegions",
        "LatencyUnknown",
    )
    assert message
    assert operator.running

    cluster.apply(dataset(namespace, "nowhere", "tokyo", "Pinned"))
    wait_condition(cluster, namespace, "lost", "Scheduled", "True", "Placed")
    assert regions_of_pods(cluster, namespace, "lost") == {"tokyo"}
    assert job(cluster, namespace, "lost")["status"]["region"] == "tokyo"


def test_a_foreign_pod_with_a_gang_name_is_never_touched_and_the_gang_retries(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "clash-1", "namespace": namespace, "labels": {"owner": "someone"}},
        # Not for any scheduler: it stays Pending and unbound.
        "spec": {"schedulerName": "nobody", "containers": [{"name": "c", "image": "x"}]},
    }
    cluster.apply(foreign)
    cluster.apply(training_job(namespace, "clash", None, replicas=2, gpus=1))

    wait_until(
        lambda: "BindFailed" in {e["reason"] for e in events_for(cluster, namespace, "clash")},
        message="the gang to be rolled back",
    )
    pod = cluster.get_json("pod", "clash-1", "-n", namespace)
    assert pod["metadata"]["labels"] == {"owner": "someone"}, "the foreign pod was modified"
    assert not pod["metadata"].get("deletionTimestamp"), "the foreign pod was deleted"
    assert [p["metadata"]["name"] for p in job_pods(cluster, namespace, "clash")] == []

    cluster.kubectl("delete", "pod", "clash-1", "-n", namespace)
    wait_condition(cluster, namespace, "clash", "Scheduled", "True", "Placed", timeout=90)
    wait_until(lambda: all_running(cluster, namespace, "clash", 2), message="the retried gang")
