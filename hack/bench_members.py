#!/usr/bin/env python3
"""Member-cluster benchmark (issue 17): a hub and two member clusters, each a kwok cluster of
its own (kube-apiserver, etcd, scheduler, controller-manager), the hub's operator reaching each
member through a delay proxy of a WAN round trip (15 ms by default). Prints a markdown report
(figures go to docs/benchmarks.md).

  hack/bench_members.py --hub KUBECONFIG --member NAME=KUBECONFIG --member NAME=KUBECONFIG
                        [--rtt-ms 15] [--lone 30] [--jobs 500] [--pods-per-job 8]
                        [--memory-jobs 10000] [--memory-nodes N]

1. **lone gangs**: one TrainingJob at a time created on the hub, placed in the first member
   (its region is the cheapest); time from the job's creation until all its pods exist, bound,
   in the member, as the member's own API server tells it (watched directly, not through the
   proxy).
2. **burst, spread**: `--jobs` TrainingJobs created at once on the hub; the members' regions are
   the cheapest, so they fill first and the rest go to the hub's regions. Pods bound per second
   over every cluster.
3. **burst, one cluster**: the same burst in the same run with the members' Regions deleted, so
   every gang is the hub's (the hub needs the GPUs for the whole burst).
4. **memory**: the hub operator's RSS, connected to both members, with no job and with
   `--memory-jobs` pending TrainingJobs; with `--memory-nodes N` every cluster is then grown to N
   nodes (hack/cluster.sh nodes) and measured again with the jobs and without, so the per-node
   and per-job costs show as slopes. Each figure is of an operator started afresh.

hack/bench.sh (BENCH=members) makes the three clusters; run by hand, each needs `hack/cluster.sh
up` with its own CLUSTER_NAME and TSUNAGU_STATE, the members with TOPOLOGY=fukuoka-cloud.yaml
(their nodes are labelled region fukuoka; the hub's Regions for them select those nodes in their
own cluster), and the CRDs applied to the hub.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

from bench_limit import cpu_seconds  # noqa: E402
from bench_operator import BindWatcher, parallel, percentile, rss_mb  # noqa: E402
from kubernetes import client, config  # noqa: E402
from tests.support.delay_proxy import DelayProxy  # noqa: E402
from tests.support.scenario import free_port, japan_regions  # noqa: E402

GROUP, VERSION = "tsunagu.io", "v1alpha1"
# The operator runs outside the clusters and takes its Lease, so reads the members' Secrets, here.
OPERATOR_NAMESPACE = "default"
MEMBER_NODE_REGION = "fukuoka"  # the region label of hack/topology/fukuoka-cloud.yaml's nodes


@dataclass
class Side:
    """One cluster as the benchmark reaches it: straight, never through the proxy."""

    name: str  # "hub", or the member's Cluster object name
    kubeconfig: str
    core: Any = None
    custom: Any = None
    proxy: DelayProxy | None = None
    regions: list[str] = field(default_factory=list)

    def connect(self) -> Side:
        configuration = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        base = client.ApiClient(configuration)
        self.core, self.custom = client.CoreV1Api(base), client.CustomObjectsApi(base)
        return self

    def gpu_nodes(self) -> int:
        return len(self.core.list_node(label_selector="type=kwok").items)

    def control_plane(self) -> dict[str, int]:
        """pid of this cluster's kube-apiserver, etcd, kwok-controller, kube-scheduler and
        kube-controller-manager by name: kwokctl runs them from the cluster's state, the
        kubeconfig's directory."""
        prefix = f"{Path(self.kubeconfig).parent}/kwok/clusters/"
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            except OSError:
                continue
            if argv0.startswith(prefix):
                found[Path(argv0).name] = int(entry.name)
        return found


class CpuMeter:
    """CPU-seconds, since it was made, of each cluster's control plane, the operator and this
    process (its watches and the delay proxies)."""

    def __init__(self, sides: list[Side], operator_pid: int) -> None:
        self.pids = {side.name: side.control_plane() for side in sides}
        self.pids["operator"] = {"tsunagu": operator_pid}
        self.start = self._read()

    def _read(self) -> dict[str, dict[str, float]]:
        readings = {
            side: {name: cpu_seconds(pid) for name, pid in pids.items()}
            for side, pids in self.pids.items()
        }
        own = resource.getrusage(resource.RUSAGE_SELF)
        readings["bench (watches, proxies)"] = {"python": own.ru_utime + own.ru_stime}
        return readings

    def since(self) -> dict[str, Any]:
        """Per cluster (and the operator, this process): the total and each process's share."""
        now = self._read()
        result: dict[str, Any] = {}
        for side, readings in now.items():
            used = {
                name: round(value - self.start[side][name], 1) for name, value in readings.items()
            }
            result[side] = {"total": round(sum(used.values()), 1), **used}
        return result


def kubectl() -> str:
    return os.environ.get("KUBECTL", "kubectl")  # hack/bench.sh passes the one tools.sh built


def flattened(kubeconfig: str) -> dict[str, Any]:
    """The kubeconfig's current context with its certificates inline, as a Secret would hold it."""
    output = subprocess.run(
        [kubectl(), "--kubeconfig", kubeconfig, "config", "view", "--raw", "--flatten", "--minify"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    loaded: dict[str, Any] = yaml.safe_load(output)
    return loaded


def through(document: dict[str, Any], proxy: DelayProxy) -> dict[str, Any]:
    """The same kubeconfig with its server behind the proxy (the certificate names loopback, as
    the proxy's address does)."""
    (entry,) = document["clusters"]
    server = urllib.parse.urlsplit(entry["cluster"]["server"])
    entry["cluster"]["server"] = f"{server.scheme}://{proxy.host}:{proxy.port}"
    return document


def apply_ignoring_conflict(create: Callable[[], Any]) -> None:
    try:
        create()
    except client.exceptions.ApiException as error:
        if error.status != 409:
            raise


def join_member(hub: Side, member: Side, price: float) -> None:
    """The member's Secret (its kubeconfig, through the proxy), Cluster and Region on the hub."""
    assert member.proxy is not None
    text = yaml.safe_dump(through(flattened(member.kubeconfig), member.proxy))
    secret = {
        "metadata": {"name": f"{member.name}-kubeconfig", "namespace": OPERATOR_NAMESPACE},
        "data": {"kubeconfig": base64.b64encode(text.encode()).decode()},
    }
    apply_ignoring_conflict(lambda: hub.core.create_namespaced_secret(OPERATOR_NAMESPACE, secret))
    hub.core.replace_namespaced_secret(secret["metadata"]["name"], OPERATOR_NAMESPACE, secret)
    cluster = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster", "metadata": {"name": member.name},
        "spec": {"kubeconfigSecretRef": {"name": f"{member.name}-kubeconfig"}},
    }  # fmt: skip
    apply_ignoring_conflict(
        lambda: hub.custom.create_cluster_custom_object(GROUP, VERSION, "clusters", cluster)
    )
    create_member_region(hub, member, price)


def create_member_region(hub: Side, member: Side, price: float) -> None:
    region = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Region", "metadata": {"name": member.name},
        "spec": {
            "prefecture": "JP-40", "displayName": f"{member.name} (member cluster)",
            # The cheapest and cleanest sites: Cheapest jobs fill the members first.
            "gpuHourPrice": price, "carbonIntensity": 300,
            "location": {"latitude": 33.5902, "longitude": 130.4017},
            "clusterRef": {"name": member.name},
            "nodeSelector": {"topology.kubernetes.io/region": MEMBER_NODE_REGION},
        },
    }  # fmt: skip
    apply_ignoring_conflict(
        lambda: hub.custom.create_cluster_custom_object(GROUP, VERSION, "regions", region)
    )
    member.regions = [member.name]


def delete_member_region(hub: Side, member: Side) -> None:
    try:
        hub.custom.delete_cluster_custom_object(GROUP, VERSION, "regions", member.name)
    except client.exceptions.ApiException as error:
        if error.status != 404:
            raise
    member.regions = []


def condition_status(body: dict[str, Any], kind: str) -> str | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return str(item.get("status"))
    return None


def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except client.exceptions.ApiException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def members_available(hub: Side, members: list[Side]) -> None:
    def available() -> bool:
        return all(
            condition_status(
                hub.custom.get_cluster_custom_object(GROUP, VERSION, "regions", region),
                "Available",
            )
            == "True"
            for member in members
            for region in member.regions
        )

    wait_until("the members' regions to be Available", available, timeout=120)


@contextmanager
def operator(hub: Side, tag: str) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"bench-members-{tag}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tsunagu.cli", "run", "--liveness-port", str(port),
         "--metrics-port", "0", "--retry-interval", "5", "--bind-concurrency", "16",
         "--leader-elect-namespace", OPERATOR_NAMESPACE,
         "--leader-elect-lease-name", f"bench-members-{port}"],
        env={**os.environ, "KUBECONFIG": hub.kubeconfig}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise SystemExit(f"operator did not become healthy; log: {log.name}") from None
                time.sleep(0.5)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def gang(name: str, pods: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {"replicas": pods, "gpusPerReplica": 1,
                 "placement": {"mode": "Bind", "objective": "Cheapest"},
                 "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}, **spec},
    }  # fmt: skip


def namespace_everywhere(sides: list[Side], name: str) -> None:
    for side in sides:
        side.core.create_namespace({"metadata": {"name": name}})


def drop_namespace(sides: list[Side], name: str, timeout: float = 600) -> None:
    """The hub's first, while the operator runs: its jobs' finalizers wait for the members' gangs
    to be removed; then the members' namespaces."""
    for side in sides:
        try:
            side.core.delete_namespace(name)
        except client.exceptions.ApiException as error:
            if error.status != 404:
                raise

        def gone(side: Side = side) -> bool:
            try:
                side.core.read_namespace(name)
            except client.exceptions.ApiException as error:
                return error.status == 404
            return False

        wait_until(f"namespace {name} to go in {side.name}", gone, timeout)


def bench_lone(hub: Side, members: list[Side], gangs: int, pods: int) -> dict[str, Any]:
    target = members[0]
    namespace = f"bench-lone-{int(time.time())}"
    sides = [hub, *members]
    namespace_everywhere(sides, namespace)
    watcher = BindWatcher(target.core, namespace)
    latencies = []
    with operator(hub, "lone"):
        members_available(hub, members)
        time.sleep(2)  # the member's watches listed: the first gang sees its nodes
        for index in range(gangs):
            name = f"lone-{index:03d}"
            started = time.time()
            hub.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingjobs", gang(name, pods)
            )
            wanted = [f"{name}-{rank}" for rank in range(pods)]
            deadline = started + 60
            while not all(pod in watcher.bound for pod in wanted) and time.time() < deadline:
                time.sleep(0.005)
            if not all(pod in watcher.bound for pod in wanted):
                raise SystemExit(f"{name}: its pods were not all bound in {target.name} in 60 s")
            latencies.append(max(watcher.bound[pod] for pod in wanted) - started)
            time.sleep(0.3)
        watcher.stop()
        drop_namespace(sides, namespace)
    return {
        "gangs": gangs, "pods": pods, "member": target.name,
        "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        "max": max(latencies),
    }  # fmt: skip


def bench_burst(hub: Side, members: list[Side], jobs: int, pods: int, tag: str) -> dict[str, Any]:
    """`jobs` gangs created at once on the hub; pods bound per second over every cluster."""
    namespace = f"bench-{tag}-{int(time.time())}"
    sides = [hub, *members]
    namespace_everywhere(sides, namespace)
    watchers = {side.name: BindWatcher(side.core, namespace) for side in sides}
    bodies = [gang(f"job-{index:04d}", pods) for index in range(jobs)]
    created: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        created[body["metadata"]["name"]] = time.time()
        hub.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)

    with operator(hub, tag) as process:
        members_available(hub, [m for m in members if m.regions])
        time.sleep(2)
        meter = CpuMeter(sides, process.pid)
        started = time.time()
        parallel(create, bodies)
        total = jobs * pods
        deadline = started + 900
        while sum(len(w.bound) for w in watchers.values()) < total and time.time() < deadline:
            time.sleep(0.2)
        bound = {
            (side, pod): at
            for side, watcher in watchers.items()
            for pod, at in watcher.bound.items()
        }
        cpu = meter.since()
        if len(bound) < total:
            raise SystemExit(f"{tag}: only {len(bound)} of {total} pods bound in 900 s")
        elapsed = max(bound.values()) - started
        per_gang = []
        for name, at in created.items():
            times = [t for (_, pod), t in bound.items() if pod.rsplit("-", 1)[0] == name]
            per_gang.append(max(times) - at)
        peak = rss_mb(process.pid)
        for watcher in watchers.values():
            watcher.stop()
        drop_namespace(sides, namespace)
    spread = {side: len(w.bound) // pods for side, w in watchers.items()}
    return {
        "pods": total, "seconds": elapsed, "pods_per_second": total / elapsed,
        "p50": percentile(per_gang, 0.5), "p99": percentile(per_gang, 0.99),
        "gangs_per_cluster": spread, "rss_mb": peak, "cpu_seconds": cpu,
    }  # fmt: skip


def operator_rss(hub: Side, members: list[Side], namespace: str, jobs: int) -> float:
    """RSS of a hub operator started now, once it is connected to every member, its view
    settled and (with `jobs`) every job of `namespace` has its Scheduled condition."""
    with operator(hub, f"memory-{jobs}") as process:
        members_available(hub, members)

        def every_job_has_status() -> bool:
            listed = hub.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingjobs"
            )
            return sum(1 for item in listed["items"] if condition_status(item, "Scheduled")) >= jobs

        if jobs:
            wait_until(f"a status on {jobs} TrainingJobs", every_job_has_status, timeout=1200)
        time.sleep(15)  # every member's nodes listed, the view and the queue settled
        return rss_mb(process.pid)


def bench_memory(hub: Side, members: list[Side], jobs: int, grow_to: int) -> list[dict[str, Any]]:
    """The hub operator's RSS, connected to every member: with no job and with `jobs` pending
    TrainingJobs (their dataset does not exist) at the clusters' sizes, then (with `grow_to`)
    with every cluster grown to that many nodes, with the jobs and after they are gone. Each
    figure is of an operator started afresh."""
    namespace = f"bench-mem-{int(time.time())}"
    sides = [hub, *members]
    rows = []

    def measure(count: int) -> None:
        nodes = {side.name: side.gpu_nodes() for side in sides}
        rss = operator_rss(hub, members, namespace, count)
        rows.append({"nodes": nodes, "jobs": count, "rss_mb": rss, "load": load_average()})
        print(f"[bench_members] memory: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)

    hub.core.create_namespace({"metadata": {"name": namespace}})
    measure(0)
    bodies = [gang(f"mem-{index:05d}", 1, datasetRef={"name": "absent"}) for index in range(jobs)]
    parallel(
        lambda body: hub.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", body
        ),
        bodies,
    )
    measure(jobs)
    if grow_to:
        grow(hub, members, grow_to)
        measure(jobs)
    drop_namespace([hub], namespace, timeout=1200)
    if grow_to:
        measure(0)
    return rows


def grow(hub: Side, members: list[Side], per_cluster: int) -> None:
    """`hack/cluster.sh nodes` to `per_cluster` nodes in every cluster: the hub's over its five
    regions (japan.yaml), each member's in its one (fukuoka-cloud.yaml). A cluster's state is its
    kubeconfig's directory, as hack/cluster.sh lays it out."""
    topologies = REPO / "hack" / "topology"
    plan = [(hub, topologies / "japan.yaml", per_cluster // 5)]
    plan += [(member, topologies / "fukuoka-cloud.yaml", per_cluster) for member in members]
    for side, topology, per_region in plan:
        env = {**os.environ, "TSUNAGU_STATE": str(Path(side.kubeconfig).parent),
               "TOPOLOGY": str(topology)}  # fmt: skip
        subprocess.run(
            [str(REPO / "hack" / "cluster.sh"), "nodes", str(per_region)], env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip


def progress(report: dict[str, Any], phase: str) -> None:
    """Each phase's figures as it ends (stderr), so a long run that fails later keeps them."""
    print(f"[bench_members] {phase}: {json.dumps(report.get(phase))}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", required=True, help="the hub's kubeconfig")
    parser.add_argument("--member", action="append", required=True, metavar="NAME=KUBECONFIG")
    parser.add_argument("--rtt-ms", type=float, default=15.0)
    parser.add_argument("--lone", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pods-per-job", type=int, default=8)
    parser.add_argument("--memory-jobs", type=int, default=10000)
    parser.add_argument("--memory-nodes", type=int, default=0)
    parser.add_argument("--skip", default="", help="comma-separated: lone,spread,single,memory")
    parser.add_argument("--single-first", action="store_true", help="the one-cluster burst first")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    hub = Side("hub", args.hub).connect()
    members = []
    for item in args.member:
        name, path = item.split("=", 1)
        members.append(Side(name, path).connect())
    for item in japan_regions():
        apply_ignoring_conflict(
            lambda item=item: hub.custom.create_cluster_custom_object(
                GROUP, VERSION, "regions", item
            )
        )
    report: dict[str, Any] = {"load_before": load_average(), "rtt_ms": args.rtt_ms}
    with ExitStack() as stack:
        for member in members:
            server = urllib.parse.urlsplit(
                flattened(member.kubeconfig)["clusters"][0]["cluster"]["server"]
            )
            member.proxy = stack.enter_context(
                DelayProxy(server.hostname or "127.0.0.1", server.port or 443, args.rtt_ms / 2000)
            )
        for price, member in enumerate(members):
            join_member(hub, member, 1.0 + price / 10)
        report["nodes"] = {side.name: side.gpu_nodes() for side in [hub, *members]}
        if "lone" not in skip:
            report["lone"] = bench_lone(hub, members, args.lone, args.pods_per_job)
            report["load_after_lone"] = load_average()
            progress(report, "lone")
        bursts = [phase for phase in ("spread", "single") if phase not in skip]
        for phase in reversed(bursts) if args.single_first else bursts:
            if phase == "single":
                for member in members:
                    delete_member_region(hub, member)
            report[phase] = bench_burst(hub, members, args.jobs, args.pods_per_job, phase)
            report[f"load_after_{phase}"] = load_average()
            progress(report, phase)
            if phase == "single":
                for price, member in enumerate(members):
                    create_member_region(hub, member, 1.0 + price / 10)
        if "memory" not in skip and args.memory_jobs:
            report["memory"] = bench_memory(hub, members, args.memory_jobs, args.memory_nodes)
            report["load_after_memory"] = load_average()
    print(json.dumps(report, indent=2))
    print_markdown(report, args)


def print_markdown(report: dict[str, Any], args: argparse.Namespace) -> None:
    nodes = report["nodes"]
    sizes = ", ".join(f"{name} {count} nodes" for name, count in nodes.items())
    print(
        f"\nClusters: {sizes}; members behind a {args.rtt_ms:.0f} ms RTT delay proxy; "
        f"load average before {report['load_before']}"
    )
    if lone := report.get("lone"):
        print(
            f"\nLone gangs ({lone['gangs']} × {lone['pods']} pods, hub → {lone['member']}): "
            f"create → all bound in the member p50 {lone['p50'] * 1000:.0f} ms, "
            f"p99 {lone['p99'] * 1000:.0f} ms (max {lone['max'] * 1000:.0f} ms)"
        )
    spread, single = report.get("spread"), report.get("single")
    if spread or single:
        print(
            f"\n| {args.jobs} jobs × {args.pods_per_job} pods | pods bound/s "
            "| p50 / p99 per gang | gangs per cluster | operator RSS |"
        )
        print("|---|---:|---:|---|---:|")
        for label, row in (("one cluster (hub)", single), ("hub + 2 members", spread)):
            if row:
                print(
                    f"| {label} | {row['pods_per_second']:.0f} | {row['p50']:.1f} s / "
                    f"{row['p99']:.1f} s | {row['gangs_per_cluster']} | {row['rss_mb']:.0f} MB |"
                )
        if spread and single:
            ratio = spread["pods_per_second"] / single["pods_per_second"]
            print(f"\nSpread over three clusters / one cluster: {ratio:.2f}×")
        for label, row in (("one cluster", single), ("spread", spread)):
            if row:
                totals = {side: used["total"] for side, used in row["cpu_seconds"].items()}
                print(f"CPU-seconds during the {label} burst: {totals}")
    rows = report.get("memory") or []
    if rows:
        print("\n| nodes (hub, members) | pending TrainingJobs | hub operator RSS | load average |")
        print("|---|---:|---:|---|")
    for row in rows:
        nodes = ", ".join(str(count) for count in row["nodes"].values())
        print(f"| {nodes} | {row['jobs']} | {row['rss_mb']:.0f} MB | {row['load']} |")
    if len(rows) == 4:
        small, large = rows[0], rows[3]
        added = sum(large["nodes"].values()) - sum(small["nodes"].values())
        per_node = (large["rss_mb"] - small["rss_mb"]) * 1024 / added if added else 0.0
        per_job = (rows[1]["rss_mb"] - small["rss_mb"]) * 1024 / rows[1]["jobs"]
        print(f"\nSlopes: {per_node:.1f} KB per node (no job), {per_job:.1f} KB per pending job")


if __name__ == "__main__":
    main()
