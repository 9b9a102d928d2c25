"""The real-node cluster (hack/realnodes.sh) of the real-pod tests, and a dataset server for them.

It is a cluster of its own (`tsunagu-real`, state under .cluster/tsunagu-real; TSUNAGU_REAL_CLUSTER
and TSUNAGU_REAL_STATE choose others) with no kwok nodes, so the kwok clusters of the other suites
never see a real node. Its nodes: two in kanto, where the gangs run, and one in kyushu, so that
probes of two regions measure each other. It is left up after the tests, like the other test
clusters, and taken down by `make cluster-down`.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.cluster import HACK, REPO_ROOT, Cluster
from tests.support.delay_proxy import DelayProxy

REAL_CLUSTER_NAME = os.environ.get("TSUNAGU_REAL_CLUSTER") or "tsunagu-real"
REAL_STATE = Path(
    os.environ.get("TSUNAGU_REAL_STATE") or REPO_ROOT / ".cluster" / REAL_CLUSTER_NAME
).resolve()
REAL_TOPOLOGY = HACK / "topology" / "real.yaml"
REAL_REGION = "kanto"
OTHER_REGION = "kyushu"
# The region of each node, in order: hack/realnodes.sh names them real-<region>-<index>.
NODE_REGIONS = (REAL_REGION, REAL_REGION, OTHER_REGION)
ALL_NODE_NAMES = tuple(f"real-{region}-{index}" for index, region in enumerate(NODE_REGIONS))
# The nodes of the region where the tests' gangs run.
REAL_NODE_NAMES = tuple(
    name for name, region in zip(ALL_NODE_NAMES, NODE_REGIONS, strict=True) if region == REAL_REGION
)
GPUS_PER_REAL_NODE = 2


def real_cluster_env() -> dict[str, str]:
    return {
        **os.environ,
        "CLUSTER_NAME": REAL_CLUSTER_NAME,
        "TSUNAGU_STATE": str(REAL_STATE),
        "TOPOLOGY": str(REAL_TOPOLOGY),
        "REAL_NODES": str(len(NODE_REGIONS)),
        "REAL_REGIONS": ",".join(NODE_REGIONS),
        "REAL_GPUS": str(GPUS_PER_REAL_NODE),
    }


def cannot_run_reason() -> str | None:
    """Why this machine cannot run real nodes (one line), or None when it can."""
    result = subprocess.run(
        [str(HACK / "realnodes.sh"), "check"],
        capture_output=True, text=True, check=False, env=real_cluster_env(),
    )  # fmt: skip
    if result.returncode == 0:
        return None
    return result.stdout.strip() or result.stderr.strip() or "hack/realnodes.sh check failed"


def host_ip() -> str:
    return subprocess.run(
        [str(HACK / "realnodes.sh"), "host-ip"],
        capture_output=True, text=True, check=True, env=real_cluster_env(),
    ).stdout.strip()  # fmt: skip


def bring_up_real_cluster() -> Cluster:
    """`hack/cluster.sh up` with the real nodes; reused when already up. Fails with its output."""
    result = subprocess.run(
        [str(HACK / "cluster.sh"), "up"],
        capture_output=True, text=True, check=False, env=real_cluster_env(),
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"hack/cluster.sh up (real nodes) failed:\n{result.stderr[-3000:]}")
    return Cluster(str(REAL_STATE / "kubeconfig"))


def real_regions() -> list[dict[str, Any]]:
    output = subprocess.run(
        ["python3", str(HACK / "topology.py"), "regions", str(REAL_TOPOLOGY)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return list(json.loads(output)["items"])


def pod_log(cluster: Cluster, namespace: str, pod: str) -> str:
    return cluster.kubectl("logs", pod, "-n", namespace).stdout


@dataclass
class DatasetServer:
    """Records served as JSON lines at /records?rank=R&limit=N; remembers who asked."""

    url: str
    requests: list[dict[str, str]] = field(default_factory=list)


def _handler(requests: list[dict[str, str]]) -> type[BaseHTTPRequestHandler]:
    class Records(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            if url.path != "/records":
                self.send_error(404)
                return
            requests.append(query)
            rank, limit = int(query.get("rank", "0")), int(query.get("limit", "1"))
            lines = [
                json.dumps({"id": rank * 1000 + index, "rank": rank, "text": f"record {index}"})
                for index in range(limit)
            ]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Records


@contextmanager
def dataset_server(listen_host: str, added_rtt_ms: float = 2.0) -> Iterator[DatasetServer]:
    """The dataset's storage in its home region: an HTTP server on loopback, reached by pods
    through a delay proxy on the host address (the distance to the storage)."""
    requests: list[dict[str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = DelayProxy("127.0.0.1", server.server_address[1], listen_host=listen_host)
    proxy.set_rtt_ms(added_rtt_ms)
    try:
        with proxy:
            yield DatasetServer(url=f"http://{listen_host}:{proxy.port}", requests=requests)
    finally:
        server.shutdown()
        server.server_close()


class GpusInUse:
    """Samples, every half second until stopped, the GPUs requested by the pods each node is
    running (phase Running): the most any node ran at once is in `most`. What the kubelet admits
    is what runs; a node never runs more than it has, whatever the API server was told."""

    def __init__(self, cluster: Cluster) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(cluster.api_client())
        self.most: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpus-in-use", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pods = self._core.list_pod_for_all_namespaces(field_selector="status.phase=Running")
            except Exception:  # a missed sample is no finding
                continue
            running: dict[str, int] = {}
            for pod in pods.items:
                node = pod.spec.node_name
                for container in pod.spec.containers:
                    resources = container.resources
                    # An extended resource's request is its limit when only the limit is given.
                    gpus = int((resources.requests or {}).get("nvidia.com/gpu")
                               or (resources.limits or {}).get("nvidia.com/gpu") or 0)  # fmt: skip
                    running[node] = running.get(node, 0) + gpus
            for node, gpus in running.items():
                self.most[node] = max(self.most.get(node, 0), gpus)
            self.samples += 1

    def __enter__(self) -> GpusInUse:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def state_exists() -> bool:
    return Path(REAL_STATE / "real").is_dir()
