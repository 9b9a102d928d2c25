"""A stand-in for the training programs of a test's TrainingJobs: an HTTP exporter on loopback
that publishes, for every Running pod of a job, the counter `tsunagu_training_samples_total`
the real program would export (docs/throughput.md), increasing at the rate a ground-truth curve
gives for the RTT between the pod's region and the job's data.

The curves are the test's secret: the operator sees only the counter, through Prometheus.

Each sample carries the exporter's own timestamp, so the rate Prometheus computes is the rate
published, whatever the scrape's timing on a busy machine.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.cluster import Cluster
from tests.support.scenario import node_regions

LOOPBACK = "127.0.0.1"
METRIC = "tsunagu_training_samples_total"

# Samples per second per GPU at an RTT to the data (ms).
Curve = Callable[[float], float]


@dataclass
class _Pod:
    job: str
    gpus: int
    rate: float  # samples per second of this pod
    started: float  # time.time() when first seen running


class TrainingExporter:
    """Watches the pods of `namespace` (polling the API) and serves their counters."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        curves: Mapping[str, Curve],
        rtt_to_data_ms: Mapping[str, float],
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.curves = dict(curves)  # workload class → curve
        self.rtt_to_data_ms = dict(rtt_to_data_ms)  # region → RTT to the data
        self.poll_seconds = poll_seconds
        self._pods: dict[str, _Pod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._regions: dict[str, str] = {}
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self._threads: list[threading.Thread] = []

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> TrainingExporter:
        self._regions = node_regions(self.cluster)
        for target, name in ((self._server.serve_forever, "exporter"), (self._follow, "pods")):
            thread = threading.Thread(target=target, name=f"training-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> TrainingExporter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def publishing(self) -> dict[str, str]:
        """Pod → job of every pod whose counter is served."""
        with self._lock:
            return {name: pod.job for name, pod in self._pods.items()}

    # --- the training programs ------------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # the API server busy a moment: look again
                self._look()
            self._stop.wait(self.poll_seconds)

    def _look(self) -> None:
        jobs = {
            job["metadata"]["name"]: job["spec"]
            for job in self.cluster.get_json("trainingjobs", "-n", self.namespace)["items"]
        }
        pods = self.cluster.get_json("pods", "-n", self.namespace)["items"]
        running: dict[str, _Pod] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            spec = jobs.get(labels.get("tsunagu.io/job", ""))
            node = pod["spec"].get("nodeName")
            if spec is None or not node or pod["status"].get("phase") != "Running":
                continue
            curve = self.curves.get(spec.get("workloadClass", ""))
            rtt = self.rtt_to_data_ms.get(self._regions.get(node, ""))
            if curve is None or rtt is None or pod["metadata"].get("deletionTimestamp"):
                continue
            gpus = int(spec["gpusPerReplica"])
            name = pod["metadata"]["name"]
            running[name] = _Pod(labels["tsunagu.io/job"], gpus, curve(rtt) * gpus, time.time())
        with self._lock:
            for name, pod in running.items():
                known = self._pods.get(name)
                if known is None or known.rate != pod.rate:
                    self._pods[name] = pod
            for name in [n for n in self._pods if n not in running]:
                del self._pods[name]  # a program that stopped exports nothing

    def _exposition(self) -> str:
        stamp_ms = int(time.time() * 1000)
        lines = [f"# TYPE {METRIC} counter"]
        with self._lock:
            for name, pod in sorted(self._pods.items()):
                value = pod.rate * (stamp_ms / 1000 - pod.started)
                labels = f'namespace="{self.namespace}",job="{pod.job}",pod="{name}"'
                lines.append(f"{METRIC}{{{labels}}} {value:.6f} {stamp_ms}")
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter._exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        return Handler
