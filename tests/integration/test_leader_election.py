"""Two replicas of the operator on one Lease, against the real API server: exactly one acts; a
leader killed in the middle of a burst is replaced by the standby; a leader cut off from the API
server stops writing before the standby starts. Every check is read back from the API server
(the Lease, pods, statuses, Events) or from what reached it (the partitioned leader's proxy)."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.fault_proxy import FaultProxy, upstream_tls
from tests.support.replicas import (
    LeaseHistory,
    assert_burst_kept_every_promise,
    bind_times,
    bound_jobs,
    lease_spec,
    parse_time,
    settled,
    small_gangs,
    start_replica,
    wait_for,
    wait_holder,
)
from tests.support.scenario import dataset

pytestmark = pytest.mark.integration

WRITES = ("POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def lease_name() -> str:
    return f"tsunagu-leader-{uuid.uuid4().hex[:8]}"


def rolled_back_events(cluster: Cluster, namespace: str) -> list[str]:
    events = cluster.get_json("events", "-n", namespace, "--field-selector", "reason=BindFailed")
    return [e["message"] for e in events["items"]]


def test_two_replicas_one_leads_and_a_burst_is_placed_once(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    run_operator: Callable[..., OperatorProcess],
    lease_name: str,
) -> None:
    first = start_replica(run_operator, lease_name)
    wait_holder(cluster, lease_name, first, timeout=20)
    second = start_replica(run_operator, lease_name)
    wait_for(lambda: second.readiness()[0] == 200, 30, "the standby to be ready")
    assert first.readiness() == (200, "leader\n")
    assert second.readiness() == (200, "standby, view synced\n")
    assert (first.metric("tsunagu_leader"), second.metric("tsunagu_leader")) == (1.0, 0.0)
    assert lease_spec(cluster, lease_name)["holderIdentity"] == first.identity

    count = 80
    cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
    cluster.apply(small_gangs(namespace, count))
    wait_for(lambda: settled(cluster, namespace, count), 240, "every job placed or pending")

    placed = assert_burst_kept_every_promise(cluster, namespace, count)
    assert placed >= 20, f"only {placed} of {count} placed"
    assert rolled_back_events(cluster, namespace) == []
    # The standby decided, bound and wrote nothing, and never tried to.
    for metric in ("tsunagu_placements_total", "tsunagu_bind_failures_total"):
        assert second.metric(metric) == 0.0, metric
    assert second.metric("tsunagu_writes_refused_total") == 0.0
    assert first.metric("tsunagu_bind_failures_total") == 0.0
    assert "rolled back" not in first.process.output() + second.process.output()
    assert lease_spec(cluster, lease_name)["holderIdentity"] == first.identity


def test_the_standby_takes_over_from_a_leader_killed_mid_burst(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    run_operator: Callable[..., OperatorProcess],
    lease_name: str,
) -> None:
    first = start_replica(run_operator, lease_name)
    wait_holder(cluster, lease_name, first, timeout=20)
    second = start_replica(run_operator, lease_name)
    cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
    cluster.apply(small_gangs(namespace, 30, prefix="a"))
    wait_for(lambda: bound_jobs(cluster, namespace) >= 5, 60, "the first gangs bound")
    first.process.kill()
    killed_at = time.time()
    cluster.apply(small_gangs(namespace, 20, prefix="b"))  # arrive while nobody acts

    wait_holder(cluster, lease_name, second, timeout=45)
    spec = lease_spec(cluster, lease_name)
    assert spec["leaseTransitions"] >= 1
    taken_at = parse_time(spec["acquireTime"])
    wait_for(lambda: settled(cluster, namespace, 50), 240, "every job placed or pending")
    assert_burst_kept_every_promise(cluster, namespace, 50)
    assert second.readiness() == (200, "leader\n")
    assert second.metric("tsunagu_leader_transitions_total") == 1.0
    # Nobody bound a pod between the kill and the takeover, and the new leader did bind.
    times = bind_times(cluster, namespace)
    assert {pod: at for pod, at in times.items() if killed_at + 1 < at < taken_at - 1} == {}
    assert any(pod.startswith("b-") for pod in times), "the new leader bound nothing"


def test_a_partitioned_leader_stops_writing_before_the_standby_starts(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    run_operator: Callable[..., OperatorProcess],
    lease_name: str,
) -> None:
    api = cluster.api_client().configuration
    with FaultProxy(api.host, upstream_tls(api)) as proxy:
        kubeconfig = proxy.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        old = start_replica(run_operator, lease_name, env={"KUBECONFIG": str(kubeconfig)})
        wait_holder(cluster, lease_name, old, timeout=20)
        new = start_replica(run_operator, lease_name)
        history = LeaseHistory()
        history.poll(cluster, lease_name)
        cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
        cluster.apply(small_gangs(namespace, 30, prefix="a"))
        wait_for(lambda: bound_jobs(cluster, namespace) >= 3, 60, "the first gangs bound")

        proxy.blackhole(True)  # the leader no longer reaches the API server; the standby does
        partitioned_at = time.time()
        cluster.apply(small_gangs(namespace, 30, prefix="b"))

        def taken_over() -> bool:
            history.poll(cluster, lease_name)
            return history.terms[-1][0] == new.identity

        wait_for(taken_over, 45, "the standby to take the Lease")
        proxy.blackhole(False)  # the old leader reaches the API server again
        wait_for(
            lambda: "stopped leading" in old.process.output(), 30, "the old leader to step down"
        )
        wait_for(lambda: settled(cluster, namespace, 60), 240, "every job placed or pending")
        wait_for(lambda: old.readiness() == (200, "standby, view synced\n"), 60, "old: standby")

    assert_burst_kept_every_promise(cluster, namespace, 60)
    taken_at = history.terms[-1][1]
    assert [holder for holder, _ in history.terms] == [old.identity, new.identity]
    # What of the old leader reached the API server: its Lease requests only, once partitioned
    # (every write it made after that was refused by its own gate, or lost in the partition).
    late = [
        (at, method, path)
        for at, method, path in proxy.forwarded
        if method in WRITES and "/leases/" not in path and at >= partitioned_at
    ]
    assert late == []
    # And from the API server's side: no pod bound while nobody was allowed to act (second
    # resolution: a second of slack on either side).
    between = {
        pod: at for pod, at in bind_times(cluster, namespace).items()
        if partitioned_at + 1 < at < taken_at - 1
    }  # fmt: skip
    assert between == {}
    assert new.readiness() == (200, "leader\n")
    assert "stopped leading" not in new.process.output()
