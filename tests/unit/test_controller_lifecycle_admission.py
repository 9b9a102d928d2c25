"""What the job lifecycle does with a gang pod that ended `Failed`: a pod the kubelet refused at
admission (`OutOfnvidia.com/gpu`, …) never ran, so the gang is rolled back and placed again at no
cost to `backoffLimit`; a pod whose program failed is a restart, or the job's failure once the
limit is reached.

The operator is the real object graph (`startup.Operator`) over a stand-in API client that
records what it is asked to do; nothing here reaches an API server."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.view import JobPod
from tsunagu.controller.settings import OperatorSettings
from tsunagu.controller.startup.operator import Operator

KEY = ("team", "gang")


class RecordingApi:
    """Every write is accepted; pod deletions are remembered."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str]] = []

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append((namespace, name))

    async def patch_job_status(self, *_: Any) -> None:
        return None

    async def create_event(self, *_: Any) -> None:
        return None


def job_body(backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "gang", "namespace": "team", "uid": "uid-gang", "generation": 1},
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 1,
            "backoffLimit": backoff_limit,
            "placement": {"mode": "Bind"},
        },
    }


def gang_pod(rank: int, phase: str, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if reason is not None:
        status["reason"] = reason
        status["message"] = f"Pod was rejected: {reason}"
    return {
        "metadata": {
            "name": f"gang-{rank}",
            "namespace": "team",
            "labels": {"tsunagu.io/job": "gang", "tsunagu.io/rank": str(rank),
                       "tsunagu.io/region": "kanto"},
            "ownerReferences": [{"apiVersion": "tsunagu.io/v1alpha1", "kind": "TrainingJob",
                                 "name": "gang", "uid": "uid-gang", "controller": True}],
        },
        "spec": {
            "nodeName": "real-kanto-0",
            "containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": status,
    }  # fmt: skip


def requeues(cause: str) -> float:
    return REGISTRY.get_sample_value("tsunagu_requeues_total", {"reason": cause}) or 0.0


def decide(*pods: dict[str, Any], backoff_limit: int = 0) -> tuple[Operator, RecordingApi]:
    """A placed job whose pods are `pods`, reconciled once."""
    api = RecordingApi()
    operator = Operator(OperatorSettings(), cast(Kube, api))
    operator.jobs.observe(job_body(backoff_limit))
    operator.statuses.seed(KEY, {"region": "kanto"})
    for body in pods:
        operator.cluster.view.upsert_pod(body)
    asyncio.run(operator.lifecycle.reconcile(KEY))
    return operator, api


def reason_of(operator: Operator, condition: str) -> str | None:
    found = operator.statuses.condition(KEY, condition)
    return None if found is None else str(found["reason"])


@pytest.mark.parametrize(
    "reason",
    ["OutOfnvidia.com/gpu", "OutOfcpu", "OutOfpods", "UnexpectedAdmissionError", "NodeAffinity"],
)
def test_a_pod_the_kubelet_refused_places_the_gang_again_without_a_restart(reason: str) -> None:
    before = requeues("kubelet refused a pod")
    operator, api = decide(gang_pod(0, "Running"), gang_pod(1, "Failed", reason))

    assert reason_of(operator, "Scheduled") == "Requeued"
    assert reason_of(operator, "Finished") is None, "no job failure, even with backoffLimit 0"
    status = operator.statuses.current(KEY)
    assert not status.get("restarts")
    assert "region" not in status, "placed again from scratch"
    message = operator.statuses.condition(KEY, "Scheduled")["message"]  # type: ignore[index]
    assert f"the kubelet refused gang-1 ({reason})" in message
    # The whole gang goes, the rank that was admitted too: all or nothing.
    assert sorted(api.deleted) == [("team", "gang-0"), ("team", "gang-1")]
    assert requeues("kubelet refused a pod") == before + 1


def test_a_pod_whose_program_failed_is_a_failure_of_the_job() -> None:
    operator, api = decide(gang_pod(0, "Running"), gang_pod(1, "Failed", "Error"))
    assert reason_of(operator, "Finished") == "Failed"
    assert ("team", "gang-0") in api.deleted


def test_a_program_failure_beside_a_refusal_counts_as_a_restart() -> None:
    """One rank ran and failed: that is the program's doing, whatever happened to the other."""
    operator, _ = decide(
        gang_pod(0, "Failed"), gang_pod(1, "Failed", "OutOfnvidia.com/gpu"), backoff_limit=2
    )
    assert reason_of(operator, "Scheduled") == "Restarting"
    assert operator.statuses.current(KEY).get("restarts") == 1


@pytest.mark.parametrize(
    ("phase", "reason", "refused"),
    [
        ("Failed", "OutOfnvidia.com/gpu", True),
        ("Failed", "OutOfmemory", True),
        ("Failed", "Taint", True),
        ("Failed", "Evicted", False),  # ran, then was evicted: not an admission refusal
        ("Failed", None, False),
        ("Running", "OutOfnvidia.com/gpu", False),
    ],
)
def test_which_pods_count_as_refused_at_admission(
    phase: str, reason: str | None, refused: bool
) -> None:
    pod = JobPod("p", 0, "n", phase, False, "uid", "kanto", reason=reason)
    assert pod.refused_by_kubelet is refused
