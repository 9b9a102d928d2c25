"""Measured latency end to end: probes measure RTT through delay proxies the test controls, a
real Prometheus scrapes them, and the operator places, reports and re-places jobs by it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.latency_harness import LatencyMesh, PrometheusServer
from tests.support.scenario import (
    condition,
    dataset,
    events_for,
    fill_region,
    free_port,
    japan_regions,
    job,
    job_pods,
    region_of,
    training_job,
    wait_condition,
    wait_ready,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

STALENESS_SECONDS = 8


@pytest.fixture
def measured_regions(cluster: Cluster) -> Iterator[None]:
    """The Japan regions with no declared links: every RTT must come from Prometheus."""
    regions = japan_regions()
    cluster.apply([{**r, "spec": {**r["spec"], "links": []}} for r in regions])
    yield
    cluster.apply(regions)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[LatencyMesh, PrometheusServer]]:
    rtt = {("tokyo", "fukuoka"): 8.0, ("tokyo", "osaka"): 4.0, ("osaka", "fukuoka"): 5.0}
    with LatencyMesh(["tokyo", "osaka", "fukuoka"], tmp_path / "mesh", rtt) as mesh:
        prometheus = PrometheusServer(tmp_path / "prom", mesh.metrics_targets, scrape_interval=1)
        with prometheus:
            yield mesh, prometheus


@pytest.fixture
def measuring_operator(
    run_operator: Callable[..., OperatorProcess],
    network: tuple[LatencyMesh, PrometheusServer],
    measured_regions: None,
) -> OperatorProcess:
    _, prometheus = network
    port = free_port()
    operator = run_operator(
        "--liveness-port", str(port), "--metrics-port", "0", "--retry-interval", "2",
        "--prometheus-url", prometheus.url, "--latency-interval", "1",
        "--staleness-seconds", str(STALENESS_SECONDS),
    )  # fmt: skip
    wait_ready(operator, port)
    return operator


def remote_job(namespace: str, name: str, on_breach: str = "Keep") -> dict:
    return training_job(
        namespace, name, "claims", replicas=1, gpus=8, maxRttMs=20,
        onLatencyBreach=on_breach, breachToleranceSeconds=2,
    )  # fmt: skip


def fukuoka_verdict(cluster: Cluster, namespace: str, name: str) -> str | None:
    body = job(cluster, namespace, name)
    scheduled = condition(body, "Scheduled")
    if scheduled is None or scheduled["status"] != "False":
        return None
    alternatives = (body["status"].get("placement") or {}).get("alternatives") or []
    return next((a["reason"] for a in alternatives if a["region"] == "fukuoka"), None)


def measured_link(cluster: Cluster, region: str, to: str) -> dict | None:
    links = cluster.get_json("region", region).get("status", {}).get("links") or []
    return next((link for link in links if link["to"] == to), None)


def test_jobs_follow_the_measured_network(
    cluster: Cluster,
    namespace: str,
    network: tuple[LatencyMesh, PrometheusServer],
    measuring_operator: OperatorProcess,
) -> None:
    mesh, _ = network
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "claims", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))

    # ~8 ms measured: a RemoteAccess job whose home is full overflows to Fukuoka.
    cluster.apply([remote_job(namespace, "keep"), remote_job(namespace, "requeue", "Requeue")])
    for name in ("keep", "requeue"):
        wait_condition(cluster, namespace, name, "Scheduled", "True", "Placed", timeout=90)
        assert region_of(cluster, namespace, name) == {"fukuoka"}
    placed = job(cluster, namespace, "keep")["status"]["placement"]
    assert 7.0 <= placed["rttMs"] <= 15.0, "the RTT used is the measured one, not a declared one"
    wait_condition(cluster, namespace, "keep", "LatencyBudgetMet", "True", "WithinBudget")
    link = wait_until(lambda: measured_link(cluster, "fukuoka", "tokyo"), message="Region links")
    assert link["source"] == "Prometheus"

    # 40 ms: Requeue leaves Fukuoka, Keep reports the breach, new jobs stop going there.
    mesh.set_rtt_ms("tokyo", "fukuoka", 40)
    wait_condition(
        cluster, namespace, "keep", "LatencyBudgetMet", "False", "OverBudget", timeout=90
    )
    # Tokyo (full) got furthest through the filters, so it names the job's reason; Fukuoka's
    # verdict says why the job did not go back there.
    wait_until(lambda: fukuoka_verdict(cluster, namespace, "requeue") == "LatencyBudget",
               timeout=60, message="the requeued job to be kept out of Fukuoka")  # fmt: skip
    wait_until(lambda: not job_pods(cluster, namespace, "requeue"), message="requeued pods gone")
    assert "Requeued" in {e["reason"] for e in events_for(cluster, namespace, "requeue")}
    assert region_of(cluster, namespace, "keep") == {"fukuoka"}, "Keep only reports"
    cluster.apply(remote_job(namespace, "newcomer"))
    wait_until(lambda: fukuoka_verdict(cluster, namespace, "newcomer") == "LatencyBudget",
               message="a new job to be kept out of Fukuoka")  # fmt: skip
    assert condition(job(cluster, namespace, "newcomer"), "Scheduled")["status"] == "False"
    assert wait_until(
        lambda: (measured_link(cluster, "fukuoka", "tokyo") or {}).get("rttMs", 0) > 30,
        message="Region.status.links to follow the measurement",
    )

    # Back to 8 ms: they come back.
    mesh.set_rtt_ms("tokyo", "fukuoka", 8)
    for name in ("requeue", "newcomer"):
        wait_condition(cluster, namespace, name, "Scheduled", "True", "Placed", timeout=120)
        assert region_of(cluster, namespace, name) == {"fukuoka"}
    wait_condition(cluster, namespace, "keep", "LatencyBudgetMet", "True", "WithinBudget")


def test_stale_measurements_are_never_used_and_recovery_needs_no_restart(
    cluster: Cluster,
    namespace: str,
    network: tuple[LatencyMesh, PrometheusServer],
    measuring_operator: OperatorProcess,
) -> None:
    _, prometheus = network
    fill_region(cluster, namespace, "tokyo")
    cluster.apply(dataset(namespace, "claims", "tokyo", "RemoteAccess", allowedRegions=["fukuoka"]))
    cluster.apply(dataset(namespace, "local", "osaka", "Pinned"))
    cluster.apply(remote_job(namespace, "before"))
    wait_condition(cluster, namespace, "before", "Scheduled", "True", "Placed", timeout=90)

    prometheus.stop()
    # Once the last measurement is older than the staleness limit, the running job's RTT is
    # unknown, and so is the RTT for any new remote placement.
    wait_condition(
        cluster, namespace, "before", "LatencyBudgetMet", "Unknown", "LatencyUnknown",
        timeout=STALENESS_SECONDS + 60,
    )  # fmt: skip
    cluster.apply(remote_job(namespace, "stale"))
    wait_until(lambda: fukuoka_verdict(cluster, namespace, "stale") == "LatencyUnknown",
               timeout=60, message="Fukuoka to be rejected for unknown latency")  # fmt: skip
    assert job_pods(cluster, namespace, "stale") == []
    cluster.apply(training_job(namespace, "at-home", "local", replicas=1, gpus=8))
    wait_condition(cluster, namespace, "at-home", "Scheduled", "True", "Placed")
    assert region_of(cluster, namespace, "at-home") == {"osaka"}

    prometheus.start()
    wait_condition(cluster, namespace, "stale", "Scheduled", "True", "Placed", timeout=120)
    assert region_of(cluster, namespace, "stale") == {"fukuoka"}
    assert measuring_operator.running
