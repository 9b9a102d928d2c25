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


def write_trusted_profile(cluster: Cluster, namespace: str) -> None:
    """The class's profile with samples that pass the trust rule, its status written as a user
    may write it (the status subresource)."""
    cluster.apply(profile(namespace))
    cluster.kubectl(
        "patch", "throughputprofile", "llm", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(samples()),
    )  # fmt: skip


def submit_refused_job(cluster: Cluster, namespace: str, name: str) -> None:
    """A job of the class with a 5 % budget, waiting: home (tokyo) is full — the furthest
    region, so the job's reason — and fukuoka over the budget by the reference curve."""
    job = training_job(namespace, name, "corpus", replicas=1, maxThroughputLoss=0.05)
    job["spec"]["workloadClass"] = "llm"
    cluster.apply(job)
    waiting = wait_condition(cluster, namespace, name, "Scheduled", "False", "InsufficientCapacity")
    verdicts = {a["region"]: a for a in waiting["status"]["placement"]["alternatives"]}
    assert verdicts["fukuoka"]["reason"] == "ThroughputLossBudget"
    assert verdicts["fukuoka"]["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.005)


def home_full_with_remote_data(cluster: Cluster, namespace: str) -> None:
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))


def placed_on_the_learned_curve(cluster: Cluster, namespace: str, name: str) -> str:
    """Waits for the job to be placed in fukuoka at the class's 1.5 %; its model's words."""
    placed = wait_condition(cluster, namespace, name, "Scheduled", "True", "Placed")
    placement = placed["status"]["placement"]
    assert placement["region"] == "fukuoka"
    assert placement["predictedThroughputLoss"] == pytest.approx(0.015, abs=0.002)
    assert "calibrated on 5 samples of class llm" in placement["model"]
    assert placement["model"] in condition(placed, "Scheduled")["message"]
    return str(placement["model"])


def test_a_trusted_profile_places_a_job_the_reference_curve_kept_at_home(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    home_full_with_remote_data(cluster, namespace)
    submit_refused_job(cluster, namespace, "tuned")
    write_trusted_profile(cluster, namespace)
    assert "cluster default" not in placed_on_the_learned_curve(cluster, namespace, "tuned")


def test_a_trusted_default_profile_places_jobs_of_other_namespaces_until_it_is_deleted(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    defaults = other_namespace
    start_operator("--default-profiles-namespace", defaults)
    home_full_with_remote_data(cluster, namespace)
    # The team's own profile of the class, as the learner creates it: no samples, not trusted.
    cluster.apply(profile(namespace))
    submit_refused_job(cluster, namespace, "first")

    write_trusted_profile(cluster, defaults)
    model = placed_on_the_learned_curve(cluster, namespace, "first")
    assert model.endswith(f"(rms 0.0%, cluster default in {defaults})")

    cluster.kubectl("delete", "throughputprofile", "llm", "-n", defaults, "--wait=true")
    submit_refused_job(cluster, namespace, "second")
