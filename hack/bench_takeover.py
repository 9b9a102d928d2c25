#!/usr/bin/env python3
"""Leadership benchmark on the kwok cluster: start-up to the first decision with a backlog of
pending TrainingJobs, takeover after `kill -9` of the leader (to the first bind by the new one),
and a burst through the fault-injecting proxy. Prints a markdown report (figures go to
docs/benchmarks.md).

  hack/bench_takeover.py [--backlog 10000] [--takeovers 6] [--fault-gangs 200]

Needs `hack/cluster.sh up` and the CRDs. The backlog's jobs cannot be placed (50 × 8 GPUs each):
every one is a full decision, a status and an Event. Each measured job ("probe") has the highest
priority and fits, so its bind is the first decision's outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

from bench_operator import (  # noqa: E402
    GROUP,
    VERSION,
    BindWatcher,
    api,
    create_namespace,
    delete_namespace,
    kubeconfig,
    parallel,
    percentile,
)
from kubernetes import client, config  # noqa: E402
from tests.support.fault_proxy import FaultProxy, FaultRates, upstream_tls  # noqa: E402
from tests.support.scenario import free_port, japan_regions  # noqa: E402

TEMPLATE = {"spec": {"containers": [{"name": "t", "image": "x"}]}}


def job(name: str, replicas: int, gpus: int, priority: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {"replicas": replicas, "gpusPerReplica": gpus, "priority": priority,
                 "template": TEMPLATE},
    }  # fmt: skip


class Replica:
    def __init__(self, lease: str, kubeconfig_path: str | None = None) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-leader-", suffix=".log", delete=False)  # noqa: SIM115
        self.started = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tsunagu.cli", "run", "--liveness-port", str(self.port),
             "--metrics-port", "0", "--retry-interval", "5", "--leader-elect-namespace",
             "default", "--leader-elect-lease-name", lease],
            env={**os.environ, "KUBECONFIG": kubeconfig_path or kubeconfig()},
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.identity = f"{socket.gethostname()}_{self.process.pid}"

    def readiness(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as a:
                return str(a.read().decode().strip())
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.readiness():
                return time.time() - self.started
            if self.process.poll() is not None:
                raise SystemExit(f"operator exited; log: {self.log.name}")
            time.sleep(0.2)
        raise SystemExit(f"operator not ready in {timeout}s; log: {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def holder(coordination: Any, lease: str) -> str:
    try:
        return str(coordination.read_namespaced_lease(lease, "default").spec.holder_identity or "")
    except client.exceptions.ApiException:
        return ""


def lease_time(coordination: Any, lease: str, field: str) -> float:
    spec = coordination.read_namespaced_lease(lease, "default").spec
    return float(getattr(spec, field).timestamp())


def wait_bound(watcher: BindWatcher, pod: str, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pod in watcher.bound:
            return watcher.bound[pod]
        time.sleep(0.05)
    raise SystemExit(f"{pod} not bound within {timeout}s")


def statuses_written(custom: Any, namespace: str) -> int:
    done, token = 0, None
    while True:
        page = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", limit=500, _continue=token
        )
        done += sum(1 for item in page["items"] if (item.get("status") or {}).get("conditions"))
        token = page["metadata"].get("continue")
        if not token:
            return done


def bench_startup_and_takeover(
    core: Any, custom: Any, coordination: Any, backlog: int, takeovers: int
) -> dict[str, Any]:
    namespace = f"bench-lead-{int(time.time())}"
    create_namespace(core, namespace)
    lease = f"bench-{namespace}"
    watcher = BindWatcher(core, namespace)
    created = time.time()
    parallel(
        lambda b: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", b
        ),
        [job(f"backlog-{i:05d}", 50, 8) for i in range(backlog)],
    )
    creating = time.time() - created
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingjobs", job("probe-start", 1, 1, priority=100)
    )
    leader = Replica(lease)
    first_bind = wait_bound(watcher, "probe-start-0", timeout=600) - leader.started
    ready = leader.wait_ready()
    deadline = time.time() + 900
    while statuses_written(custom, namespace) < backlog + 1 and time.time() < deadline:
        time.sleep(5)
    caught_up = time.time() - leader.started
    standby = Replica(lease)
    standby.wait_ready()
    results: list[float] = []
    phases: list[tuple[float, float, float]] = []
    for run in range(takeovers):
        while holder(coordination, lease) != leader.identity:
            time.sleep(0.2)
        while standby.readiness() != "standby, view synced":
            time.sleep(0.2)
        time.sleep(3)  # a few renewals: the standby's clock sees a fresh record
        leader.process.kill()
        killed = time.time()
        # The dead leader's last renewal (nobody else writes the Lease for 13 s or more).
        last_renewal = lease_time(coordination, lease, "renew_time")
        probe = f"probe-takeover-{run}"
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", job(probe, 1, 1, priority=100)
        )
        bound = wait_bound(watcher, f"{probe}-0", timeout=120)
        acquired = lease_time(coordination, lease, "acquire_time")
        results.append(bound - killed)
        # Where the time went: the kill came this long after the last renewal; the standby took
        # the Lease this long after that renewal (the lease duration, as it saw it); then the
        # first bind.
        phases.append((killed - last_renewal, acquired - last_renewal, bound - acquired))
        print(
            f"  takeover {run + 1}: {bound - killed:.2f} s (kill {killed - last_renewal:.2f} s "
            f"after the last renewal; Lease taken {acquired - last_renewal:.2f} s after it; "
            f"first bind {bound - acquired:.2f} s after that)",
            file=sys.stderr,
        )
        leader, standby = standby, Replica(lease)
        standby.wait_ready()
    for replica in (leader, standby):
        replica.stop()
    watcher.stop()
    delete_namespace(core, namespace)
    return {
        "backlog": backlog, "creating_seconds": creating, "first_bind_seconds": first_bind,
        "healthy_seconds": ready, "statuses_caught_up_seconds": caught_up,
        "takeovers": results,
        "phases_since_renewal_taken_bound": phases,
        "takeover_p50": percentile(results, 0.5) if results else None,
        "takeover_p99": percentile(results, 0.99) if results else None,
        "takeover_max": max(results) if results else None,
    }  # fmt: skip


FAULTS = FaultRates(
    drop=0.02, lose_answer=0.02, delay=0.05, delay_seconds=0.5, error=0.04, throttle=0.04,
    cut_watch=0.1,
)  # fmt: skip


def bench_faults(core: Any, custom: Any, gangs: int) -> dict[str, Any]:
    namespace = f"bench-faults-{int(time.time())}"
    create_namespace(core, namespace)
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig(), client_configuration=configuration)
    with FaultProxy(configuration.host, upstream_tls(configuration), seed=7) as proxy:
        path = proxy.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        lease = f"bench-{namespace}"
        leader = Replica(lease, str(path))
        leader.wait_ready()
        standby = Replica(lease, str(path))
        standby.wait_ready()
        proxy.set_rates(FAULTS)
        started = time.time()
        parallel(
            lambda b: custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingjobs", b
            ),
            [job(f"g-{i:03d}", 1 + i % 2, (1, 2, 4)[i % 3]) for i in range(gangs)],
        )
        converged = None
        deadline = time.time() + 600
        while time.time() < deadline:
            if settled(custom, core, namespace, gangs):
                converged = time.time() - started
                break
            time.sleep(1)
        injected = dict(proxy.injected)
        binds: dict[str, int] = {}
        for _, method, path_ in proxy.forwarded:
            if method == "POST" and path_.endswith("/binding"):
                binds[path_] = binds.get(path_, 0) + 1
        for replica in (leader, standby):
            replica.stop()
    pods = json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"]
    events = core.list_namespaced_event(namespace, field_selector="reason=BindFailed").items
    placed = sum(1 for p in pods if p["spec"].get("nodeName"))
    ranks: dict[tuple[str, str], int] = {}
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if "tsunagu.io/job" in labels and not pod["metadata"].get("deletionTimestamp"):
            rank = (labels["tsunagu.io/job"], labels["tsunagu.io/rank"])
            ranks[rank] = ranks.get(rank, 0) + 1
    delete_namespace(core, namespace)
    return {
        "gangs": gangs, "injected": injected, "requests": proxy.requests,
        "converged_seconds": converged, "pods_bound": placed,
        # A pod name bound again after a rollback recreated the pod, or a bind retried after a
        # lost answer (the API server refuses a second bind of one pod): not a double bind.
        "bind_requests_sent_twice": sum(1 for n in binds.values() if n > 1),
        "duplicated_ranks": sum(1 for n in ranks.values() if n > 1),
        "rollbacks": len(events), "overcommitted_nodes": overcommitted(core),
    }  # fmt: skip


def settled(custom: Any, core: Any, namespace: str, count: int) -> bool:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs")["items"]
    if len(items) != count:
        return False
    pods = json.loads(core.list_namespaced_pod(namespace, _preload_content=False).data)["items"]
    by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        name = (pod["metadata"].get("labels") or {}).get("tsunagu.io/job")
        if name and not pod["metadata"].get("deletionTimestamp"):
            by_job.setdefault(name, []).append(pod)
    for item in items:
        conditions = {c["type"]: c for c in (item.get("status") or {}).get("conditions") or []}
        scheduled = conditions.get("Scheduled")
        gang = by_job.get(item["metadata"]["name"], [])
        if scheduled is None:
            return False
        if scheduled["status"] == "True":
            if "Running" not in conditions or len(gang) != item["spec"]["replicas"]:
                return False
            if not all(p["spec"].get("nodeName") for p in gang):
                return False
        elif gang:
            return False
    return True


def overcommitted(core: Any) -> int:
    nodes = json.loads(core.list_node(_preload_content=False).data)["items"]
    allocatable = {
        n["metadata"]["name"]: int(n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0"))
        for n in nodes
    }
    used: dict[str, int] = {}
    pods = json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
    for pod in pods:
        node = pod["spec"].get("nodeName")
        if not node or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        for container in pod["spec"]["containers"]:
            limits = (container.get("resources") or {}).get("limits") or {}
            used[node] = used.get(node, 0) + int(limits.get("nvidia.com/gpu") or 0)
    return sum(1 for node, gpus in used.items() if gpus > allocatable.get(node, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--takeovers", type=int, default=6)
    parser.add_argument("--fault-gangs", type=int, default=200)
    args = parser.parse_args()
    core, custom = api()
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig(), client_configuration=configuration)
    coordination = client.CoordinationV1Api(client.ApiClient(configuration))
    regions = japan_regions()
    for region in regions:
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "regions", region)
        except client.exceptions.ApiException as error:
            if error.status != 409:
                raise
    lead = bench_startup_and_takeover(core, custom, coordination, args.backlog, args.takeovers)
    faults = bench_faults(core, custom, args.fault_gangs) if args.fault_gangs else None
    print(json.dumps({"leadership": lead, "faults": faults}, indent=2), file=sys.stderr)
    print(f"\nBacklog of {lead['backlog']} pending TrainingJobs (created in "
          f"{lead['creating_seconds']:.0f} s):")  # fmt: skip
    print(f"- start to the first bind (highest-priority job): {lead['first_bind_seconds']:.1f} s")
    print(f"- start to healthy (lists done): {lead['healthy_seconds']:.1f} s")
    print(f"- start to every status written: {lead['statuses_caught_up_seconds']:.0f} s")
    runs = ", ".join(f"{t:.1f}" for t in lead["takeovers"])
    p50, p99 = lead["takeover_p50"], lead["takeover_p99"]
    print(f"- takeover, kill -9 → first bind by the new leader: p50 {p50:.1f} s, "
          f"p99 {p99:.1f} s over {len(lead['takeovers'])} runs ({runs})")  # fmt: skip
    if faults:
        print(f"\nFault proxy, {faults['gangs']} gangs, {faults['requests']} requests: "
              f"injected {faults['injected']}; converged in {faults['converged_seconds']:.0f} s; "
              f"{faults['pods_bound']} pods bound; rollbacks {faults['rollbacks']}; "
              f"pod names bound more than once {faults['bind_requests_sent_twice']}; "
              f"ranks with two pods {faults['duplicated_ranks']}; "
              f"over-committed nodes {faults['overcommitted_nodes']}")  # fmt: skip


if __name__ == "__main__":
    main()
