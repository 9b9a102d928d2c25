#!/usr/bin/env python3
"""Operator benchmark on the kwok cluster: gang binding throughput and latency of tsunagu,
side by side with kube-scheduler binding the same number of pods, and operator memory with many
TrainingJobs. Prints a markdown report (figures go to docs/benchmarks.md).

  hack/bench_operator.py [--jobs 500] [--pods-per-job 8] [--memory-jobs 10000]

Needs `hack/cluster.sh up` with enough nodes (e.g. NODES_PER_REGION=200 → 1,000 nodes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402
from tests.support.scenario import free_port, japan_regions  # noqa: E402

GROUP, VERSION = "tsunagu.io", "v1alpha1"


def kubeconfig() -> str:
    return subprocess.run(
        [str(REPO / "hack" / "cluster.sh"), "kubeconfig"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def api() -> tuple[Any, Any]:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig(), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    base = client.ApiClient(configuration)
    return client.CoreV1Api(base), client.CustomObjectsApi(base)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class BindWatcher:
    """Records when each pod of a namespace was first seen bound (spec.nodeName set).

    It reads the watch as raw JSON lines: the client's models would cost this harness more CPU
    than the schedulers it measures, on the same two cores."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.bound: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(core, namespace), daemon=True)
        self._thread.start()

    def _run(self, core: Any, namespace: str) -> None:
        version = ""  # resumes where the last watch ended, not with every pod listed again
        while not self._stop.is_set():
            try:
                response = core.list_namespaced_pod(
                    namespace, watch=True, timeout_seconds=5, resource_version=version,
                    _preload_content=False,
                )  # fmt: skip
                pending = b""
                for chunk in response.stream(65536):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        event = json.loads(line)
                        if event["type"] == "ERROR":  # e.g. 410 Gone: start afresh
                            version = ""
                            continue
                        version = event["object"]["metadata"]["resourceVersion"]
                        self._record(event["object"])
                    if self._stop.is_set():
                        break
                response.close()  # not back to the pool: it may hold what was left unread
            except Exception:
                time.sleep(0.2)

    def _record(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        if (pod.get("spec") or {}).get("nodeName") and name not in self.bound:
            self.bound[name] = time.time()

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.bound) < count and time.time() < deadline:
            time.sleep(0.2)
        if len(self.bound) < count:
            raise SystemExit(f"only {len(self.bound)} of {count} pods bound within {timeout}s")

    def stop(self) -> None:
        self._stop.set()


def create_namespace(core: Any, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})


def delete_namespace(core: Any, name: str) -> None:
    core.delete_namespace(name)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            core.read_namespace(name)
        except client.exceptions.ApiException:
            return
        time.sleep(1)


def parallel(function: Any, items: list[Any], workers: int = 16) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(function, items))


def bench_kube_scheduler(core: Any, pods: int, regions: list[str]) -> dict[str, float]:
    namespace = f"bench-ks-{int(time.time())}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
    bodies = [
        {
            "metadata": {"name": f"plain-{i}"},
            "spec": {
                "nodeSelector": {"topology.kubernetes.io/region": regions[i % len(regions)]},
                "containers": [
                    {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ],
            },
        }
        for i in range(pods)
    ]
    created: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        created[body["metadata"]["name"]] = time.time()
        response = core.create_namespaced_pod(namespace, body, _preload_content=False)
        response.read()  # read but not decoded into models; the connection goes back clean
        response.release_conn()

    started = time.time()
    parallel(create, bodies)
    watcher.wait_for(pods, timeout=900)
    elapsed = max(watcher.bound.values()) - started
    latencies = [watcher.bound[name] - created[name] for name in created]
    watcher.stop()
    delete_namespace(core, namespace)
    return {"pods": pods, "seconds": elapsed, "pods_per_second": pods / elapsed,
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}  # fmt: skip


def start_operator() -> tuple[subprocess.Popen[bytes], int, Any]:
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-operator-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tsunagu.cli", "run", "--liveness-port", str(port),
         "--metrics-port", "0", "--retry-interval", "5", "--bind-concurrency", "16",
         "--leader-elect-namespace", "default", "--leader-elect-lease-name", f"bench-{port}"],
        env={**os.environ, "KUBECONFIG": kubeconfig()}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process, port, log
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"operator did not become healthy; log: {log.name}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_tsunagu(
    core: Any,
    custom: Any,
    jobs: int,
    per_job: int,
    steady: bool = True,
    hook: Callable[[str, subprocess.Popen[bytes]], None] | None = None,
) -> dict[str, Any]:
    """The burst of TrainingJobs; `steady` adds the gangs arriving one by one after it; `hook`
    is called with ("started", operator) before the burst and ("bound", operator) once its last
    pod is bound (bench_podgroups.py reads the processes' CPU there)."""
    namespace = f"bench-tj-{int(time.time())}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
    process, _, log = start_operator()
    if hook:
        hook("started", process)
    bodies = [
        {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
            "metadata": {"name": f"job-{i:04d}"},
            "spec": {"replicas": per_job, "gpusPerReplica": 1,
                     "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}},
        }
        for i in range(jobs)
    ]  # fmt: skip
    created: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        created[body["metadata"]["name"]] = time.time()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)

    started = time.time()
    parallel(create, bodies)
    watcher.wait_for(jobs * per_job, timeout=900)
    if hook:
        hook("bound", process)
    elapsed = max(watcher.bound.values()) - started
    per_gang = []
    for name, at in created.items():
        pods = [watcher.bound[f"{name}-{rank}"] for rank in range(per_job)]
        per_gang.append(max(pods) - at)
    peak = rss_mb(process.pid)
    wait_all_running(core, namespace, jobs * per_job)
    arrivals = steady_arrivals(custom, watcher, namespace, per_job) if steady else None
    process.terminate()
    process.wait(timeout=60)
    watcher.stop()
    delete_namespace(core, namespace)
    return {"pods": jobs * per_job, "seconds": elapsed, "pods_per_second": jobs * per_job / elapsed,
            "p50": percentile(per_gang, 0.5), "p99": percentile(per_gang, 0.99), "rss_mb": peak,
            "steady": arrivals, "log": log.name}  # fmt: skip


def wait_all_running(core: Any, namespace: str, pods: int, timeout: float = 300) -> None:
    """Lets kwok finish starting the burst, so the next phase measures no leftover load."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        listed = core.list_namespaced_pod(namespace, _preload_content=False)
        items = json.loads(listed.data)["items"]
        if sum(p.get("status", {}).get("phase") == "Running" for p in items) >= pods:
            return
        time.sleep(2)


def steady_arrivals(
    custom: Any,
    watcher: BindWatcher,
    namespace: str,
    per_job: int,
    jobs: int = 60,
    rate: float = 2.0,
) -> dict[str, float]:
    """Create→all-bound of gangs arriving one by one (no backlog), the latency a user sees."""
    created: dict[str, float] = {}
    for i in range(jobs):
        name = f"steady-{i:03d}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"replicas": per_job, "gpusPerReplica": 1,
                     "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}},
        }  # fmt: skip
        created[name] = time.time()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs", body)
        time.sleep(1.0 / rate)
    deadline = time.time() + 120
    names = [f"{job}-{rank}" for job in created for rank in range(per_job)]
    while time.time() < deadline and not all(n in watcher.bound for n in names):
        time.sleep(0.2)
    latencies = [
        max(watcher.bound[f"{job}-{rank}"] for rank in range(per_job)) - at
        for job, at in created.items()
        if all(f"{job}-{rank}" in watcher.bound for rank in range(per_job))
    ]
    return {"jobs": len(latencies), "rate": rate, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99)}  # fmt: skip


def bench_memory(core: Any, custom: Any, jobs: int) -> dict[str, float]:
    """RSS of the operator holding `jobs` TrainingJobs (pending: their dataset does not exist)."""
    namespace = f"bench-mem-{int(time.time())}"
    create_namespace(core, namespace)
    bodies = [
        {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainingJob",
            "metadata": {"name": f"mem-{i:05d}"},
            "spec": {"replicas": 1, "gpusPerReplica": 1, "datasetRef": {"name": "absent"},
                     "template": {"spec": {"containers": [{"name": "t", "image": "x"}]}}},
        }
        for i in range(jobs)
    ]  # fmt: skip
    parallel(
        lambda b: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainingjobs", b
        ),
        bodies,
    )
    process, _, _ = start_operator()
    deadline = time.time() + 900
    while time.time() < deadline:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "trainingjobs")
        done = sum(1 for item in listed["items"] if (item.get("status") or {}).get("conditions"))
        if done >= jobs:
            break
        time.sleep(5)
    resident = rss_mb(process.pid)
    process.terminate()
    process.wait(timeout=60)
    delete_namespace(core, namespace)
    return {"jobs": jobs, "rss_mb": resident}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--pods-per-job", type=int, default=8)
    parser.add_argument("--memory-jobs", type=int, default=10000)
    args = parser.parse_args()
    core, custom = api()
    items = japan_regions()
    for item in items:
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "regions", item)
        except client.exceptions.ApiException as error:
            if error.status != 409:
                raise
    regions = [item["metadata"]["name"] for item in items]
    nodes = len(core.list_node(label_selector="type=kwok").items)
    pods = args.jobs * args.pods_per_job
    baseline = bench_kube_scheduler(core, pods, regions)
    ours = bench_tsunagu(core, custom, args.jobs, args.pods_per_job)
    memory = bench_memory(core, custom, args.memory_jobs) if args.memory_jobs else None
    print(
        json.dumps(
            {"nodes": nodes, "kube_scheduler": baseline, "tsunagu": ours, "memory": memory},
            indent=2,
        )
    )
    print(
        f"\n| {nodes} nodes, {args.jobs} jobs × {args.pods_per_job} pods "
        "| pods bound/s | p50 create→bound | p99 |"
    )
    print("|---|---|---|---|")
    print(
        f"| kube-scheduler (plain pods, region selector) | {baseline['pods_per_second']:.0f} | "
        f"{baseline['p50'] * 1000:.0f} ms (per pod) | {baseline['p99'] * 1000:.0f} ms |"
    )
    print(
        f"| tsunagu (gangs, Bind mode) | {ours['pods_per_second']:.0f} "
        f"({ours['pods_per_second'] / baseline['pods_per_second']:.2f}×) | "
        f"{ours['p50'] * 1000:.0f} ms (per gang) | {ours['p99'] * 1000:.0f} ms |"
    )
    steady = ours["steady"]
    print(
        f"\nGangs arriving one by one ({steady['rate']:.0f} jobs/s, {steady['jobs']} jobs of "
        f"{args.pods_per_job} pods): create → all bound p50 {steady['p50'] * 1000:.0f} ms, "
        f"p99 {steady['p99'] * 1000:.0f} ms"
    )
    if memory:
        print(f"\nOperator RSS with {memory['jobs']} TrainingJobs: {memory['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
