"""What was learned of a workload class places its jobs: a ThroughputProfile that shows the class
barely suffers from RTT lets a job run remotely that the reference curve (12 % at 15 ms) kept
waiting at home, whether the profile is the job's namespace's own or a cluster-wide default (a
profile of the default profiles' namespace). On the real API server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import condition, dataset, fill_region, training_job, wait_condition

pytestmark = pytest.mark.integration

TRUE_K = 0.001  # per ms: 1.5 % at 15 ms, where the reference curve says 12 %


def profile(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "ThroughputProfile",
        "metadata": {"name": "llm", "namespace": namespace},
        "spec": {"workloadClass": "llm"},
    }


def samples() -> dict[str, Any]:
    return {
        "status": {
            "baseline": 1000,
            "samples": [
                {"region": "fukuoka", "rttMs": rtt, "throughput": 1000 / (1 + TRUE_K * rtt)}
                for rtt in (5, 10, 15, 20, 30)
            ],
        }
    }


def test_a_trusted_profile_places_a_job_the_reference_curve_kept_at_home(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))
    job = training_job(namespace, "tuned", "corpus", replicas=1, maxThroughputLoss=0.05)
    job["spec"]["workloadClass"] = "llm"
    cluster.apply(job)
    # Home is full (the furthest region, so the job's reason); fukuoka is over the budget.
    waiting = wait_condition(
        cluster, namespace, "tuned", "Scheduled", "False", "InsufficientCapacity"
    )
    verdicts = {a["region"]: a for a in waiting["status"]["placement"]["alternatives"]}
    assert verdicts["fukuoka"]["reason"] == "ThroughputLossBudget"
    assert verdicts["fukuoka"]["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.005)

    cluster.apply(profile(namespace))
    cluster.kubectl(
        "patch", "throughputprofile", "llm", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(samples()),
    )  # fmt: skip
    placed = wait_condition(cluster, namespace, "tuned", "Scheduled", "True", "Placed")
    placement = placed["status"]["placement"]
    assert placement["region"] == "fukuoka"
    assert placement["predictedThroughputLoss"] == pytest.approx(0.015, abs=0.002)
    assert "calibrated on 5 samples of class llm" in placement["model"]
    assert "calibrated on 5 samples of class llm" in condition(placed, "Scheduled")["message"]


def refused_by_the_reference_curve(cluster: Cluster, namespace: str, name: str) -> None:
    waiting = wait_condition(cluster, namespace, name, "Scheduled", "False", "InsufficientCapacity")
    verdicts = {a["region"]: a for a in waiting["status"]["placement"]["alternatives"]}
    assert verdicts["fukuoka"]["reason"] == "ThroughputLossBudget"
    assert verdicts["fukuoka"]["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.005)


def test_a_trusted_default_profile_places_jobs_of_other_namespaces_until_it_is_deleted(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    defaults = other_namespace
    start_operator("--default-profiles-namespace", defaults)
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))
    # The team's own profile of the class, as the learner creates it: no samples, not trusted.
    cluster.apply(profile(namespace))

    def job(name: str) -> dict[str, Any]:
        body = training_job(namespace, name, "corpus", replicas=1, maxThroughputLoss=0.05)
        body["spec"]["workloadClass"] = "llm"
        return body

    cluster.apply(job("first"))
    refused_by_the_reference_curve(cluster, namespace, "first")

    # An administrator writes the default's status (the status subresource, as a user may).
    cluster.apply(profile(defaults))
    cluster.kubectl(
        "patch", "throughputprofile", "llm", "-n", defaults, "--subresource=status",
        "--type=merge", "-p", json.dumps(samples()),
    )  # fmt: skip
    placed = wait_condition(cluster, namespace, "first", "Scheduled", "True", "Placed")
    placement = placed["status"]["placement"]
    assert placement["region"] == "fukuoka"
    assert placement["predictedThroughputLoss"] == pytest.approx(0.015, abs=0.002)
    assert f"class llm (rms 0.0%, cluster default in {defaults})" in placement["model"]
    assert placement["model"] in condition(placed, "Scheduled")["message"]

    cluster.kubectl("delete", "throughputprofile", "llm", "-n", defaults, "--wait=true")
    cluster.apply(job("second"))
    refused_by_the_reference_curve(cluster, namespace, "second")
