"""Several replicas of the operator sharing one Lease, and what the tests read about them: the
Lease itself, each replica's /readyz and metrics, the state a burst of gangs settles into."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    assert_no_pod_duplicated,
    condition,
    free_port,
    node_regions,
    training_job,
    wait_ready,
)
from tests.support.waiting import wait_until

LEASE_NAMESPACE = "default"


@dataclass
class Replica:
    process: OperatorProcess
    liveness: int
    metrics: int

    @property
    def identity(self) -> str:
        return f"{socket.gethostname()}_{self.process.process.pid}"

    def readiness(self) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{self.liveness}/readyz")

    def health(self) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{self.liveness}/healthz")

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (0 when it has none)."""
        _, text = _get(f"http://127.0.0.1:{self.metrics}/metrics")
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if match:
                total += float(match.group(2))
        return total


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def start_replica(
    run_operator: Callable[..., OperatorProcess],
    lease_name: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> Replica:
    liveness, metrics = free_port(), free_port()
    process = run_operator(
        "--liveness-port", str(liveness), "--metrics-port", str(metrics),
        "--retry-interval", "2", "--leader-elect-namespace", LEASE_NAMESPACE,
        "--leader-elect-lease-name", lease_name, *args,
        env=env,
    )  # fmt: skip
    wait_ready(process, liveness)
    return Replica(process, liveness, metrics)


def lease_spec(cluster: Cluster, name: str) -> dict[str, Any]:
    lease = cluster.get_json("lease", name, "-n", LEASE_NAMESPACE)
    return dict(lease.get("spec") or {})


def wait_holder(cluster: Cluster, lease_name: str, replica: Replica, timeout: float) -> None:
    def held() -> bool:
        result = cluster.kubectl(
            "get", "lease", lease_name, "-n", LEASE_NAMESPACE, "-o", "json", check=False
        )
        return result.returncode == 0 and f'"holderIdentity": "{replica.identity}"' in result.stdout

    wait_until(held, timeout=timeout, interval=0.2, message=f"{replica.identity} to hold the Lease")


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class LeaseHistory:
    """Who held the Lease since when (its acquireTime), as polled."""

    terms: list[tuple[str, float]] = field(default_factory=list)

    def poll(self, cluster: Cluster, name: str) -> None:
        spec = lease_spec(cluster, name)
        holder, acquired = spec.get("holderIdentity") or "", spec.get("acquireTime")
        if (
            holder
            and acquired
            and (not self.terms or self.terms[-1] != (holder, parse_time(acquired)))
        ):
            self.terms.append((holder, parse_time(acquired)))


def small_gangs(namespace: str, count: int, prefix: str = "g") -> list[dict[str, Any]]:
    """Gangs of 1–2 replicas of 1, 2 or 4 GPUs: many fit on the test cluster's 160 GPUs, not all."""
    return [
        training_job(
            namespace, f"{prefix}-{i:03d}", "shared", replicas=1 + i % 2, gpus=(1, 2, 4)[i % 3]
        )
        for i in range(count)
    ]


def bound_jobs(cluster: Cluster, namespace: str) -> int:
    pods = cluster.get_json("pods", "-n", namespace)["items"]
    return len(
        {p["metadata"]["labels"].get("tsunagu.io/job") for p in pods if p["spec"].get("nodeName")}
    )


def settled(cluster: Cluster, namespace: str, count: int) -> bool:
    """Every job placed and its gang up, or pending with a reason; nothing half-made."""
    items = cluster.get_json("trainingjobs", "-n", namespace)["items"]
    if len(items) != count:
        return False
    pods_by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        name = (pod["metadata"].get("labels") or {}).get("tsunagu.io/job")
        if name and not pod["metadata"].get("deletionTimestamp"):
            pods_by_job.setdefault(name, []).append(pod)
    for item in items:
        scheduled = condition(item, "Scheduled")
        if scheduled is None or not scheduled.get("reason"):
            return False
        pods = pods_by_job.get(item["metadata"]["name"], [])
        if scheduled["status"] == "True":
            running = condition(item, "Running")
            if running is None or len(pods) != item["spec"]["replicas"]:
                return False
            if not all(p["spec"].get("nodeName") for p in pods):
                return False
        elif pods:
            return False
    return True


def assert_burst_kept_every_promise(cluster: Cluster, namespace: str, count: int) -> int:
    """0 over-commit, no pod twice, each placed gang whole in one region, every pending job with
    a reason; returns how many were placed."""
    assert_no_gpu_overcommitted(cluster)
    assert_no_pod_duplicated(cluster, namespace)
    where = node_regions(cluster)
    placed = 0
    items = cluster.get_json("trainingjobs", "-n", namespace)["items"]
    assert len(items) == count
    pods = cluster.get_json("pods", "-n", namespace)["items"]
    for item in items:
        name = item["metadata"]["name"]
        scheduled = condition(item, "Scheduled")
        assert scheduled is not None, f"{name} has no Scheduled condition"
        assert scheduled["reason"], f"{name} has no Scheduled reason"
        gang = [
            p for p in pods if (p["metadata"].get("labels") or {}).get("tsunagu.io/job") == name
        ]
        if scheduled["status"] == "True":
            placed += 1
            assert len(gang) == item["spec"]["replicas"], f"{name}: {len(gang)} pods"
            assert len({where[p["spec"]["nodeName"]] for p in gang}) == 1, f"{name} spans regions"
            assert item["status"]["region"] == where[gang[0]["spec"]["nodeName"]]
        else:
            assert gang == [], f"{name} is pending but has pods"
    return placed


def bind_times(cluster: Cluster, namespace: str) -> dict[str, float]:
    """When each pod was bound: its PodScheduled condition (the API server's clock, seconds)."""
    times = {}
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        for item in (pod.get("status") or {}).get("conditions") or []:
            if item["type"] == "PodScheduled" and item["status"] == "True":
                times[pod["metadata"]["name"]] = parse_time(item["lastTransitionTime"])
    return times


def wait_for(predicate: Callable[[], Any], timeout: float, message: str) -> Any:
    return wait_until(predicate, timeout=timeout, interval=1.0, message=message)


def now() -> float:
    return time.time()
