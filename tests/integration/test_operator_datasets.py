"""Datasets change under running jobs: a residency rule tightened after placement sends the job
home (data never leaves home, even retroactively), and a Dataset in use is not deleted from
under its jobs. Read back from the real API server."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    condition,
    dataset,
    events_for,
    fill_region,
    job,
    job_pods,
    node_regions,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

IN_USE = "tsunagu.io/dataset-in-use"


def pod_regions(cluster: Cluster, namespace: str, name: str) -> set[str]:
    regions = node_regions(cluster)
    return {
        regions.get(pod["spec"].get("nodeName") or "", "")
        for pod in job_pods(cluster, namespace, name)
        if pod["spec"].get("nodeName") and not pod["metadata"].get("deletionTimestamp")
    }


def test_a_dataset_switched_to_pinned_sends_its_remote_job_home(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    fillers = fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "claims", "tokyo", "RemoteAccess"))
    cluster.apply(training_job(namespace, "remote", "claims", replicas=2, maxRttMs=20))
    placed = wait_condition(cluster, namespace, "remote", "Running", "True", "PodsRunning")
    assert placed["status"]["region"] != "tokyo"

    cluster.apply(dataset(namespace, "claims", "tokyo", "Pinned"))
    body = wait_condition(
        cluster, namespace, "remote", "ResidencyViolated", "True", "OutsideResidency"
    )
    assert "no longer allows compute" in condition(body, "ResidencyViolated")["message"]
    # Home is full: the job waits there, and nothing of it runs outside tokyo any more.
    wait_condition(cluster, namespace, "remote", "Scheduled", "False", "InsufficientCapacity")
    wait_until(lambda: not pod_regions(cluster, namespace, "remote"), message="pods gone")
    assert "OutsideResidency" in {e["reason"] for e in events_for(cluster, namespace, "remote")}

    cluster.kubectl("delete", "pod", *fillers, "-n", namespace, "--wait=false")
    home = wait_condition(cluster, namespace, "remote", "Running", "True", "PodsRunning", 90)
    assert home["status"]["region"] == "tokyo"
    assert pod_regions(cluster, namespace, "remote") == {"tokyo"}
    assert condition(home, "ResidencyViolated")["status"] == "False"
    env = {
        item["name"]: item.get("value")
        for item in job_pods(cluster, namespace, "remote")[0]["spec"]["containers"][0]["env"]
    }
    assert env["TSUNAGU_DATASET_RESIDENCY"] == "Pinned"


def test_a_dataset_in_use_waits_for_its_jobs_before_it_is_deleted(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "shared", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "reader", "shared", replicas=1))
    wait_condition(cluster, namespace, "reader", "Scheduled", "True", "Placed")
    wait_until(
        lambda: IN_USE in (cluster.get_json("dataset", "shared", "-n", namespace)["metadata"]
                           .get("finalizers") or []),
        message="the in-use finalizer",
    )  # fmt: skip

    cluster.kubectl("delete", "dataset", "shared", "-n", namespace, "--wait=false")
    blocked = wait_until(
        lambda: [
            e for e in events_for(cluster, namespace, "shared") if e["reason"] == "DatasetInUse"
        ],
        message="a DatasetInUse Event",
    )
    assert blocked[0]["type"] == "Warning"
    still = cluster.get_json("dataset", "shared", "-n", namespace)
    assert still["metadata"].get("deletionTimestamp")
    # A job placed on a Dataset being deleted: none; the running one is untouched.
    cluster.apply(training_job(namespace, "latecomer", "shared", replicas=1))
    wait_condition(cluster, namespace, "latecomer", "Scheduled", "False", "DatasetNotFound")
    assert job(cluster, namespace, "reader")["status"]["region"] == "osaka"

    cluster.kubectl("delete", "trainingjob", "reader", "-n", namespace)

    def gone() -> bool:
        found = cluster.kubectl(
            "get", "dataset", "shared", "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return not found.stdout.strip()

    wait_until(gone, timeout=60, message="the Dataset to be deleted once no job reads it")
