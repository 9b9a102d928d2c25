#!/usr/bin/env python3
"""The physical limit of binding on this machine: how many pods per second the API server of the
kwok cluster takes from a minimal client, either created already bound (`spec.nodeName` set: one
write per pod) or created and then bound (`pods/binding`: two writes, what any scheduler of pods
it did not create must do). No scheduler is involved: the pods name a scheduler nobody runs.

The client is as cheap as Python gets: one kept-alive TLS connection per thread
(`http.client`), bodies serialised before the clock starts, responses read and dropped, no rate
limit. `--client go` runs the same loop written in Go (hack/benchlimit: HTTP/2 as client-go uses
it; `go-http1`: one HTTP/1.1 connection per worker, as the Python client) to show whether the
Python client is the bottleneck on the shared cores.

  hack/bench_limit.py [--pods 4000] [--threads 8,16,32] [--mode bound,bind] [--client python,go]

Prints JSON; bench_podgroups.py imports `measure`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from bench_operator import BindWatcher, api, create_namespace, delete_namespace, kubeconfig  # noqa: E402

NOBODY = "bench-nobody"  # a scheduler name no scheduler serves: only this client binds


@dataclass(frozen=True)
class Endpoint:
    server: str
    host: str
    port: int
    context: ssl.SSLContext
    token: str | None
    ca: str
    cert: str
    key: str


def endpoint() -> Endpoint:
    """Server and credentials of the kubeconfig (the Python client writes its certificates out)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig(), client_configuration=configuration)
    url = urlparse(configuration.host)
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    token = (configuration.api_key or {}).get("authorization")
    return Endpoint(configuration.host, url.hostname or "127.0.0.1", url.port or 443, context,
                    token, configuration.ssl_ca_cert, configuration.cert_file or "",
                    configuration.key_file or "")  # fmt: skip


def pod_body(name: str, node: str | None, gpus: int = 1) -> bytes:
    spec: dict[str, Any] = {
        "schedulerName": NOBODY,
        "containers": [
            {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
        ],
    }
    if node:
        spec["nodeName"] = node
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": spec}).encode()  # fmt: skip


def binding_body(name: str, node: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
    ).encode()


def _python_writes(
    where: Endpoint, namespace: str, plan: list[tuple[str, str]], mode: str, threads: int
) -> tuple[float, int]:
    """Runs the plan (pod, node) in `threads` threads; returns (start time, failed requests)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if where.token:
        headers["Authorization"] = where.token
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    requests: list[list[tuple[str, bytes]]] = []
    for name, node in plan:
        if mode == "bound":
            requests.append([(pods_path, pod_body(name, node))])
        else:
            requests.append(
                [
                    (pods_path, pod_body(name, None)),
                    (f"{pods_path}/{name}/binding", binding_body(name, node)),
                ]
            )
    failed = [0] * threads
    ready = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        connection = http.client.HTTPSConnection(where.host, where.port, context=where.context)
        connection.connect()
        ready.wait()
        for pod in requests[index::threads]:
            for path, body in pod:
                connection.request("POST", path, body, headers)
                response = connection.getresponse()
                response.read()
                if response.status >= 300:  # a pod not made (or not bound) is not counted
                    failed[index] += 1
                    break
        connection.close()

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    ready.wait()  # every connection is open: the TLS handshakes are not measured
    started = time.time()
    for thread in workers:
        thread.join()
    return started, sum(failed)


def clear_namespace(core: Any, namespace: str) -> None:
    """Pods first, in one request (kwok removes a deleted pod at once), then the namespace: the
    namespace controller alone takes tens of seconds over thousands of pods."""
    from kubernetes.client.exceptions import ApiException

    try:
        core.delete_collection_namespaced_pod(
            namespace, grace_period_seconds=0, _preload_content=False
        ).release_conn()
    except ApiException as error:  # 504 on a loaded API server: the namespace controller goes on
        if error.status != 504:
            raise
    delete_namespace(core, namespace)


def cluster_processes() -> dict[str, int]:
    """pid of each control-plane process of this cluster (kwokctl runs them from its workdir)."""
    state = os.environ.get("TSUNAGU_STATE", str(REPO / ".cluster"))
    name = os.environ.get("CLUSTER_NAME", "tsunagu")
    prefix = f"{state}/kwok/clusters/{name}/bin/"
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if argv0.startswith(prefix):
            found[argv0[len(prefix) :]] = int(entry.name)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU-seconds of the control plane, this process and its children, and any process added."""

    def __init__(self) -> None:
        self.pids = cluster_processes()

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def __call__(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        readings = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        readings["bench client"] = own.ru_utime + own.ru_stime
        readings["child processes"] = children.ru_utime + children.ru_stime
        return readings


def go_client() -> str:
    """The Go client, built (once, into the tool cache) by hack/tools.sh."""
    out = subprocess.run([str(REPO / "hack" / "tools.sh"), "benchlimit"], capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"could not build the Go client: {out.stderr.strip()[-500:]}")
    return subprocess.run([str(REPO / "hack" / "tools.sh"), "path", "benchlimit"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip


def _go_writes(
    where: Endpoint,
    namespace: str,
    plan: list[tuple[str, str]],
    mode: str,
    threads: int,
    http1: bool,
) -> tuple[float, int]:
    if not where.cert:
        raise SystemExit("the Go client needs a kubeconfig with a client certificate")
    with tempfile.NamedTemporaryFile("w", prefix="benchlimit-", suffix=".json") as plan_file:
        json.dump([[name, node] for name, node in plan], plan_file)
        plan_file.flush()
        out = subprocess.run(
            [go_client(), "--server", where.server, "--ca", where.ca, "--cert", where.cert,
             "--key", where.key, "--namespace", namespace, "--mode", mode,
             "--concurrency", str(threads), "--plan", plan_file.name, "--scheduler", NOBODY,
             *(["--http1"] if http1 else [])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    result = json.loads(out.stdout)
    return float(result["started"]), int(result["failed"])


def measure(
    core: Any,
    nodes: list[str],
    pods: int,
    mode: str,
    threads: int,
    client: str = "python",
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Writes `pods` pods spread over `nodes` and times them from the first request to the last
    pod seen bound on a watch (as the schedulers are timed)."""
    namespace = f"bench-limit-{mode}-{uuid.uuid4().hex[:6]}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
    plan = [(f"p-{i:05d}", nodes[i % len(nodes)]) for i in range(pods)]
    where = endpoint()
    before = cpu() if cpu else {}
    if client == "python":
        started, failed = _python_writes(where, namespace, plan, mode, threads)
    else:
        started, failed = _go_writes(where, namespace, plan, mode, threads, client == "go-http1")
    written = time.time()
    watcher.wait_for(pods - failed, timeout=600)
    spent = {k: round(v - before.get(k, 0.0), 2) for k, v in cpu().items()} if cpu else {}
    elapsed = max(watcher.bound.values()) - started
    watcher.stop()
    clear_namespace(core, namespace)
    return {"mode": mode, "client": client, "threads": threads, "pods": pods, "failed": failed,
            "seconds": elapsed, "pods_per_second": (pods - failed) / elapsed,
            "client_seconds": written - started, "cpu_seconds": spent}  # fmt: skip


def best(
    core: Any,
    nodes: list[str],
    pods: int,
    mode: str,
    threads: list[int],
    client: str,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The fastest of the concurrencies tried (each a run of its own), with the others listed."""
    runs = [measure(core, nodes, pods, mode, t, client, cpu) for t in threads]
    top = max(runs, key=lambda run: run["pods_per_second"])
    return {**top, "tried": {run["threads"]: round(run["pods_per_second"]) for run in runs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=4000)
    parser.add_argument("--threads", default="8,16,32")
    parser.add_argument("--mode", default="bound,bind")
    parser.add_argument("--client", default="python")
    args = parser.parse_args()
    core, _ = api()
    meter = CpuMeter()
    nodes = sorted(n.metadata.name for n in core.list_node(label_selector="type=kwok").items)
    threads = [int(t) for t in args.threads.split(",")]
    results = [
        best(core, nodes, args.pods, mode, threads, client, meter)
        for client in args.client.split(",")
        for mode in args.mode.split(",")
    ]
    print(json.dumps({"nodes": len(nodes), "load": os.getloadavg(), "runs": results}, indent=2))


if __name__ == "__main__":
    main()
