"""A JobSet's pods scheduled by tsunagu as one gang: JobSet's controller (tests/support/jobset.py)
makes a leader Job and a workers Job, kube-controller-manager's Job controller makes their pods,
and tsunagu binds all of them together into the region the dataset allows; when a worker fails,
the JobSet restarts and its new pods land together again. Skipped, with the reason, where the
JobSet controller cannot be built here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.jobset import (
    JOBSET_NAME_LABEL,
    REPLICATED_JOB_LABEL,
    JobSetController,
    JobSetUnavailable,
    jobset_manifest,
)
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    dataset,
    events_for,
    node_regions,
    set_outcome,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
RESTART_LABEL = "jobset.sigs.k8s.io/restart-attempt"


@pytest.fixture
def jobsets(cluster: Cluster) -> Iterator[JobSetController]:
    controller = JobSetController(cluster)
    try:
        controller.start()
    except JobSetUnavailable as why:
        pytest.skip(f"the JobSet controller cannot be built or run here: {why}")
    yield controller
    controller.stop()


def gang_template(group: str, size: int, dataset_name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {GROUP_LABEL: group},
            "annotations": {"tsunagu.io/dataset": dataset_name, "tsunagu.io/min-member": str(size)},
        },
        "spec": {
            "schedulerName": "tsunagu",
            "containers": [
                {
                    "name": "trainer",
                    "image": "trainer",
                    "resources": {"limits": {"nvidia.com/gpu": "4"}},
                }
            ],
        },
    }


def live_pods(cluster: Cluster, namespace: str, jobset: str) -> list[dict[str, Any]]:
    items = cluster.get_json("pods", "-n", namespace, "-l", f"{JOBSET_NAME_LABEL}={jobset}")
    return [
        pod
        for pod in items["items"]
        if not pod["metadata"].get("deletionTimestamp")
        and pod["status"].get("phase") not in ("Failed", "Succeeded")
    ]


def regions_of(cluster: Cluster, pods: list[dict[str, Any]]) -> Counter[str]:
    regions = node_regions(cluster)
    return Counter(regions.get(pod["spec"].get("nodeName") or "", "") for pod in pods)


def test_a_jobset_is_bound_as_one_gang_and_its_restart_lands_together_again(
    cluster: Cluster, namespace: str, operator: OperatorProcess, jobsets: JobSetController
) -> None:
    cluster.apply(dataset(namespace, "scans", "osaka", "Pinned"))
    manifest = jobset_manifest(
        namespace, "train", leaders=1, workers=3, pod_template=gang_template("train", 4, "scans")
    )
    manifest["spec"]["failurePolicy"] = {"maxRestarts": 2}
    cluster.apply(manifest)

    def all_bound(attempt: str) -> Any:
        pods = [
            p
            for p in live_pods(cluster, namespace, "train")
            if p["metadata"]["labels"].get(RESTART_LABEL, "0") == attempt
        ]
        return pods if len(pods) == 4 and all(p["spec"].get("nodeName") for p in pods) else None

    first = wait_until(lambda: all_bound("0"), timeout=90, message="the JobSet's 4 pods, bound")
    assert jobsets.running, jobsets.output()[-3000:]
    assert regions_of(cluster, first) == Counter({"osaka": 4})
    roles = sorted(p["metadata"]["labels"][REPLICATED_JOB_LABEL] for p in first)
    assert roles == ["leader", "workers", "workers", "workers"]
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Job" for p in first)
    worker = next(p for p in first if p["metadata"]["labels"][REPLICATED_JOB_LABEL] == "workers")
    assert "Scheduled" in [
        e["reason"] for e in events_for(cluster, namespace, worker["metadata"]["name"])
    ]
    assert_no_gpu_overcommitted(cluster)

    set_outcome(cluster, namespace, worker["metadata"]["name"], "Failed")

    again = wait_until(
        lambda: all_bound("1"), timeout=120, message="the restarted JobSet's 4 pods, bound"
    )
    assert regions_of(cluster, again) == Counter({"osaka": 4}), "together, where the data is"
    assert_no_gpu_overcommitted(cluster)
    cluster.kubectl("delete", "jobset", "train", "-n", namespace, "--wait=true", "--timeout=60s")
