"""The JobSet controller of tests/support/jobset.py runs against the test cluster: a JobSet of a
leader and two workers (default scheduler) gets its Jobs and pods from the real controllers
(JobSet's, then kube-controller-manager's Job controller), and stopping the helper leaves no
webhook behind. Skipped, with the reason, where the controller cannot be built here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.jobset import (
    JOBSET_NAME_LABEL,
    REPLICATED_JOB_LABEL,
    WEBHOOK_LABEL,
    JobSetController,
    JobSetUnavailable,
    jobset_manifest,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def start_or_skip(cluster: Cluster) -> JobSetController:
    controller = JobSetController(cluster)
    try:
        return controller.start()
    except JobSetUnavailable as why:
        pytest.skip(f"the JobSet controller cannot be built or run here: {why}")


@pytest.fixture
def jobsets(cluster: Cluster) -> Iterator[JobSetController]:
    """One controller at a time per cluster: two would both act on every JobSet."""
    controller = start_or_skip(cluster)
    yield controller
    controller.stop()


def controller_owner(body: dict[str, Any]) -> dict[str, Any] | None:
    owners = body["metadata"].get("ownerReferences") or []
    return next((owner for owner in owners if owner.get("controller")), None)


def test_a_jobset_gets_its_pods_from_the_controllers(
    cluster: Cluster, namespace: str, jobsets: JobSetController
) -> None:
    cluster.apply(jobset_manifest(namespace, "train", leaders=1, workers=2))
    jobset = cluster.get_json("jobset", "train", "-n", namespace)

    def pods_bound() -> list[dict[str, Any]] | None:
        items = cluster.get_json("pods", "-n", namespace, "-l", f"{JOBSET_NAME_LABEL}=train")
        pods: list[dict[str, Any]] = items["items"]
        bound = [pod for pod in pods if pod["spec"].get("nodeName")]
        return pods if len(pods) == 3 and len(bound) == 3 else None

    pods = wait_until(pods_bound, timeout=90, message="the JobSet's 3 pods, bound")
    assert jobsets.running, jobsets.output()[-3000:]

    jobs = cluster.get_json("jobs", "-n", namespace, "-l", f"{JOBSET_NAME_LABEL}=train")["items"]
    by_uid = {job["metadata"]["uid"]: job for job in jobs}
    assert sorted(job["metadata"]["labels"][REPLICATED_JOB_LABEL] for job in jobs) == [
        "leader",
        "workers",
    ]
    for job in jobs:  # the Jobs are the JobSet's, made by its controller
        owner = controller_owner(job)
        assert owner, job["metadata"]
        assert (owner["kind"], owner["uid"]) == ("JobSet", jobset["metadata"]["uid"])
    roles = []
    for pod in pods:  # the pods are the Jobs', made by the Job controller
        owner = controller_owner(pod)
        assert owner, pod["metadata"]
        assert owner["kind"] == "Job", owner
        assert owner["uid"] in by_uid, owner
        assert pod["spec"]["schedulerName"] == "default-scheduler"
        roles.append(pod["metadata"]["labels"][REPLICATED_JOB_LABEL])
    assert sorted(roles) == ["leader", "workers", "workers"]
    # The defaulting webhook ran on the JobSet (served by the local controller).
    assert jobset["spec"]["successPolicy"]["operator"] == "All"

    cluster.kubectl("delete", "jobset", "train", "-n", namespace, "--wait=true", "--timeout=60s")


def test_stopping_leaves_no_webhook_and_no_process(cluster: Cluster) -> None:
    controller = start_or_skip(cluster)
    selector = f"{WEBHOOK_LABEL}=true"
    kinds = "mutatingwebhookconfigurations,validatingwebhookconfigurations"
    assert len(cluster.get_json(kinds, "-l", selector)["items"]) == 2
    controller.stop()
    assert cluster.get_json(kinds, "-l", selector)["items"] == []
    assert not controller.running
