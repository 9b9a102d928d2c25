"""Edits and refusals after placement: a spec edited to exclude where the job runs moves it, a
pod the kubelet refused at admission makes the gang be placed again without costing a restart,
and replica counts stay true after the job has finished. Read back from the real API server."""

from __future__ import annotations

import json

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    condition,
    dataset,
    events_for,
    job,
    job_pods,
    set_outcome,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_excluding_the_region_a_job_runs_in_moves_it(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "tokyo", "RemoteAccess"))
    body = training_job(namespace, "mover", "d", replicas=1)
    cluster.apply(body)
    first = wait_condition(cluster, namespace, "mover", "Running", "True", "PodsRunning")
    where = first["status"]["region"]

    body["spec"]["placement"]["excludedRegions"] = [where]
    cluster.apply(body)

    def moved() -> dict | None:
        current = job(cluster, namespace, "mover")
        status = current.get("status") or {}
        running = condition(current, "Running")
        if status.get("region") not in (None, where) and running and running["status"] == "True":
            return current
        return None

    after = wait_until(moved, timeout=60, message="the job to move out of the excluded region")
    assert after["status"]["observedGeneration"] == after["metadata"]["generation"]
    requeued = [e for e in events_for(cluster, namespace, "mover") if e["reason"] == "Requeued"]
    assert any(f"region {where} is now excluded" in e["message"] for e in requeued)


def test_replica_counts_stay_true_after_the_job_failed(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    body = training_job(namespace, "fails", "d", replicas=2)
    body["spec"]["backoffLimit"] = 0
    cluster.apply(body)
    wait_condition(cluster, namespace, "fails", "Running", "True", "PodsRunning")
    set_outcome(cluster, namespace, "fails-0", "Failed")
    wait_condition(cluster, namespace, "fails", "Finished", "True", "Failed")

    def counted() -> dict | None:
        status = job(cluster, namespace, "fails")["status"]
        return status if status.get("runningReplicas") == 0 else None

    status = wait_until(counted, message="runningReplicas 0 once no pod runs")
    assert status["failedReplicas"] == 1
    assert status["state"] == "Failed"


def test_a_pod_the_kubelet_refused_places_the_gang_again_without_a_restart(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    body = training_job(namespace, "admitted", "d", replicas=2)
    body["spec"]["backoffLimit"] = 0  # a restart would finish it as Failed
    cluster.apply(body)
    wait_condition(cluster, namespace, "admitted", "Running", "True", "PodsRunning")
    first = {p["metadata"]["uid"] for p in job_pods(cluster, namespace, "admitted")}

    # What a kubelet writes when its admission refuses a pod whose GPUs another pod took.
    refusal = {
        "status": {
            "phase": "Failed",
            "reason": "OutOfnvidia.com/gpu",
            "message": "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu",
        }
    }
    cluster.kubectl(
        "patch", "pod", "admitted-1", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(refusal),
    )  # fmt: skip

    def replaced() -> bool:
        pods = job_pods(cluster, namespace, "admitted")
        uids = {p["metadata"]["uid"] for p in pods}
        running = all(p["status"].get("phase") == "Running" for p in pods)
        return len(pods) == 2 and not uids & first and running

    wait_until(replaced, timeout=60, message="the gang to be placed again")
    status = job(cluster, namespace, "admitted")["status"]
    assert status.get("restarts", 0) == 0
    assert condition(job(cluster, namespace, "admitted"), "Finished") is None
    reasons = [e["message"] for e in events_for(cluster, namespace, "admitted")]
    assert any("OutOfnvidia.com/gpu" in message for message in reasons)


def test_what_the_gang_was_built_from_cannot_change_while_it_is_placed(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "fixed", "d", replicas=1))
    wait_condition(cluster, namespace, "fixed", "Scheduled", "True", "Placed")
    generation = job(cluster, namespace, "fixed")["metadata"]["generation"]

    for patch, field in (
        ({"spec": {"replicas": 2}}, "spec.replicas"),
        ({"spec": {"gpusPerReplica": 2}}, "spec.gpusPerReplica"),
        ({"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "v2"}]}}}},
         "spec.template"),
    ):  # fmt: skip
        refused = cluster.kubectl(
            "patch", "trainingjob", "fixed", "-n", namespace, "--type=merge",
            "-p", json.dumps(patch), check=False,
        )  # fmt: skip
        assert refused.returncode != 0
        assert f"{field} cannot change while the job is placed" in refused.stderr
    assert job(cluster, namespace, "fixed")["metadata"]["generation"] == generation

    # Not placed (its dataset does not exist): the same edit is taken.
    cluster.apply(training_job(namespace, "waiting", "absent", replicas=1))
    wait_condition(cluster, namespace, "waiting", "Scheduled", "False", "DatasetNotFound")
    cluster.kubectl(
        "patch", "trainingjob", "waiting", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"replicas": 2}}),
    )  # fmt: skip
    assert job(cluster, namespace, "waiting")["spec"]["replicas"] == 2
