"""What one user writes cannot stop the operator for the job or for anyone else: pods that only
carry a job's label are not its pods, and a spec the API server refuses is answered once, not
retried for ever. Every check is read back from the real API server."""

from __future__ import annotations

import time
from typing import Any

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


def stranger(namespace: str, name: str, job_name: str) -> dict[str, Any]:
    """A pod made by hand with the job's label and no owner; no scheduler takes it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"tsunagu.io/job": job_name}},
        "spec": {
            "schedulerName": "nobody",
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }


def own_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    uid = job(cluster, namespace, name)["metadata"]["uid"]
    return [
        pod
        for pod in job_pods(cluster, namespace, name)
        if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])
    ]


def test_a_pod_labelled_as_the_job_before_it_exists_is_ignored_and_reported(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(stranger(namespace, "impostor", "early"))
    cluster.apply(training_job(namespace, "early", "d", replicas=2))

    body = wait_condition(cluster, namespace, "early", "Running", "True", "PodsRunning")
    assert body["status"]["region"] == "osaka"
    assert len(own_pods(cluster, namespace, "early")) == 2
    reasons = wait_until(
        lambda: [
            e for e in events_for(cluster, namespace, "early") if e["reason"] == "ForeignPods"
        ],
        message="a ForeignPods Event",
    )
    assert "impostor" in reasons[0]["message"]
    # Not its pod, so never its to delete.
    assert cluster.get_json("pod", "impostor", "-n", namespace)["metadata"]["name"] == "impostor"


def test_a_pod_added_to_a_running_job_does_not_keep_it_running(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "joined", "d", replicas=2))
    wait_condition(cluster, namespace, "joined", "Running", "True", "PodsRunning")
    cluster.apply(stranger(namespace, "joined-extra", "joined"))

    for pod in own_pods(cluster, namespace, "joined"):
        set_outcome(cluster, namespace, pod["metadata"]["name"], "Succeeded")
    body = wait_condition(cluster, namespace, "joined", "Finished", "True", "Succeeded")
    assert body["status"]["succeededReplicas"] == 2


def test_a_pod_spec_the_api_server_refuses_is_reported_once_and_waits_for_an_edit(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    refused = training_job(namespace, "refused", "d", replicas=2)
    container = refused["spec"]["template"]["spec"]["containers"][0]
    container["name"] = "Trainer_Bad"  # not a DNS label: the API server answers 422
    cluster.apply(refused)

    body = wait_condition(cluster, namespace, "refused", "Scheduled", "False", "InvalidSpec")
    message = condition(body, "Scheduled")["message"]
    assert "422" in message
    assert "spec.containers[0].name" in message  # the server's own words name the field

    # No retry loop: three retry intervals (2 s in these tests) later nothing more was tried.
    time.sleep(6)

    def rolled_back() -> list[dict[str, Any]]:
        return [e for e in events_for(cluster, namespace, "refused") if e["reason"] == "BindFailed"]

    attempts = wait_until(
        lambda: [
            e for e in events_for(cluster, namespace, "refused") if e["reason"] == "InvalidSpec"
        ],
        message="the InvalidSpec Event",
    )
    assert sum(int(e.get("count") or 1) for e in attempts) == 1
    assert rolled_back() == []
    assert job_pods(cluster, namespace, "refused") == []

    container["name"] = "trainer"
    cluster.apply(refused)
    fixed = wait_condition(cluster, namespace, "refused", "Scheduled", "True", "Placed")
    assert fixed["status"]["observedGeneration"] == fixed["metadata"]["generation"]


def test_a_service_of_the_jobs_name_that_is_not_its_own_stops_the_gang(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """MASTER_ADDR resolves through the job's Service: someone else's would send the ranks to
    the wrong pods, so the gang is not started beside it."""
    cluster.apply({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "squatted", "namespace": namespace},
        "spec": {"clusterIP": "None", "selector": {"app": "other"},
                 "ports": [{"port": 29500}]},
    })  # fmt: skip
    cluster.apply(dataset(namespace, "d", "osaka", "Pinned"))
    cluster.apply(training_job(namespace, "squatted", "d", replicas=1))
    failures = wait_until(
        lambda: [e for e in events_for(cluster, namespace, "squatted")
                 if e["reason"] == "BindFailed"],
        message="the gang to be rolled back",
    )  # fmt: skip
    assert "Service squatted exists and is not this job's" in failures[0]["message"]
    service = cluster.get_json("service", "squatted", "-n", namespace)
    assert service["spec"]["selector"] == {"app": "other"}  # untouched
    wait_until(lambda: own_pods(cluster, namespace, "squatted") == [], message="pods deleted")
