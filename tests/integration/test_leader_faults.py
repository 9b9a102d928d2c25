"""The operator behind a fault-injecting proxy in front of the real API server: requests dropped,
answers lost after the server acted, delays, 5xx, 429 with Retry-After and watch streams cut in
the middle (each open watch, 10 % per second), all through a burst of gangs, with a standby
beside the leader; and kube-apiserver, then etcd, restarted in the middle of a burst. Every
promise is kept: no GPU over-committed, no pod twice, each gang whole in one region, every job
placed or pending with a reason, no replica restarted. And the start-up errors: one line,
naming the flag or the file, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cluster import REPO_ROOT, Cluster, OperatorProcess
from tests.support.fault_proxy import FaultProxy, FaultRates, upstream_tls
from tests.support.replicas import (
    assert_burst_kept_every_promise,
    bound_jobs,
    lease_spec,
    settled,
    small_gangs,
    start_replica,
    wait_for,
    wait_holder,
)
from tests.support.scenario import condition, dataset, free_port

pytestmark = pytest.mark.integration

FAULTS = FaultRates(
    drop=0.02, lose_answer=0.02, delay=0.05, delay_seconds=0.5, error=0.04, throttle=0.04,
    cut_watch=0.1,
)  # fmt: skip


def test_a_burst_through_the_fault_proxy_keeps_every_promise(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    run_operator: Callable[..., OperatorProcess],
) -> None:
    lease = f"tsunagu-faults-{uuid.uuid4().hex[:8]}"
    api = cluster.api_client().configuration
    with FaultProxy(api.host, upstream_tls(api), seed=15) as proxy:
        kubeconfig = proxy.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        env = {"KUBECONFIG": str(kubeconfig)}
        leader = start_replica(run_operator, lease, env=env)
        wait_holder(cluster, lease, leader, timeout=30)
        standby = start_replica(run_operator, lease, env=env)
        proxy.set_rates(FAULTS)
        count = 200  # the burst
        cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
        cluster.apply(small_gangs(namespace, count))
        wait_for(lambda: settled(cluster, namespace, count), 420, "every job placed or pending")
        injected = dict(proxy.injected)

    placed = assert_burst_kept_every_promise(cluster, namespace, count)
    assert placed >= 20, f"only {placed} of {count} placed"
    # The faults were there: every kind was injected during the burst.
    assert set(injected) == {"drop", "lose_answer", "delay", "error", "throttle", "cut_watch"}
    print(f"faults injected: {injected}; {placed} of {count} placed")
    for replica in (leader, standby):
        assert replica.process.running, replica.process.output()[-3000:]


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_burst_survives_a_restart_of_the_control_plane(
    component: str,
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    run_operator: Callable[..., OperatorProcess],
) -> None:
    if cluster.control_plane is None:
        pytest.skip("the cluster's processes are not ours to restart (TSUNAGU_KUBECONFIG)")
    lease = f"tsunagu-restart-{uuid.uuid4().hex[:8]}"
    leader = start_replica(run_operator, lease)
    wait_holder(cluster, lease, leader, timeout=30)
    standby = start_replica(run_operator, lease)
    wait_for(lambda: standby.readiness()[0] == 200, 30, "the standby to be ready")
    cluster.apply(dataset(namespace, "shared", "tokyo", "RemoteAccess"))
    cluster.apply(small_gangs(namespace, 30, prefix="a"))
    try:
        wait_for(lambda: bound_jobs(cluster, namespace) >= 3, 60, "the first gangs bound")
        # Down for longer than the renew deadline: the leader stops acting meanwhile.
        restart = (
            cluster.restart_apiserver if component == "kube-apiserver" else cluster.restart_etcd
        )
        restart(down_seconds=12)
        # Seen by the replicas only through watches opened again after the restart.
        cluster.apply(small_gangs(namespace, 30, prefix="b"))
    finally:
        cluster.ensure_control_plane()  # the next tests share the cluster
    wait_for(lambda: settled(cluster, namespace, 60), 300, "every job placed or pending")
    assert_burst_kept_every_promise(cluster, namespace, 60)

    # Jobs created after the restart were seen, placed, and their pods seen running.
    def running_after_restart() -> list[str]:
        return [
            job["metadata"]["name"]
            for job in cluster.get_json("trainingjobs", "-n", namespace)["items"]
            if job["metadata"]["name"].startswith("b-")
            and (condition(job, "Running") or {}).get("status") == "True"
        ]

    wait_for(running_after_restart, 60, "a job created after the restart to run")
    # Nobody was restarted: the same two processes, one leading, the other a synced standby,
    # both healthy again.
    for replica in (leader, standby):
        assert replica.process.running, replica.process.output()[-3000:]
        wait_for(lambda r=replica: r.health()[0] == 200, 30, "the replica to be healthy")
    holder = lease_spec(cluster, lease)["holderIdentity"]
    assert holder in (leader.identity, standby.identity)
    acting, other = (leader, standby) if holder == leader.identity else (standby, leader)
    wait_for(lambda: acting.readiness() == (200, "leader\n"), 30, "the holder to lead")
    wait_for(lambda: other.readiness() == (200, "standby, view synced\n"), 30, "a synced standby")
    # The standby's view went on through the outage: handed over cleanly, it places new gangs
    # on what is really free.
    acting.process.stop()
    wait_holder(cluster, lease, other, timeout=30)
    cluster.apply(small_gangs(namespace, 10, prefix="c"))
    wait_for(lambda: settled(cluster, namespace, 70), 120, "the new gangs placed or pending")
    assert_burst_kept_every_promise(cluster, namespace, 70)


def run_once(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsunagu.cli", "run", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_port_in_use_names_the_flag(cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_once("--liveness-port", str(port), "--metrics-port", "0", env=cluster.env())
        assert_one_line_exit_2(result, "--liveness-port", str(port), "address already in use")
        result = run_once(
            "--liveness-port", str(free_port()), "--metrics-port", str(port), env=cluster.env()
        )
        assert_one_line_exit_2(result, "--metrics-port", str(port))


def test_an_unreadable_kubeconfig_names_the_file(cluster: Cluster, tmp_path: Path) -> None:
    missing = tmp_path / "missing-kubeconfig"
    result = run_once(env={**cluster.env(), "KUBECONFIG": str(missing)})
    assert_one_line_exit_2(result, str(missing))
    broken = tmp_path / "broken-kubeconfig"
    broken.write_text("clusters: [\n")
    result = run_once(env={**cluster.env(), "KUBECONFIG": str(broken)})
    assert_one_line_exit_2(result, str(broken))


def test_missing_crds_are_named(cluster: Cluster) -> None:
    api = cluster.api_client().configuration
    hidden = FaultRates(hide=("/apis/tsunagu.io/v1alpha1",))
    with FaultProxy(api.host, upstream_tls(api), rates=hidden) as proxy:
        kubeconfig = proxy.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        result = run_once(env={**cluster.env(), "KUBECONFIG": str(kubeconfig)})
    assert_one_line_exit_2(result, "trainingjobs.tsunagu.io", "kubectl apply -f crds/")
