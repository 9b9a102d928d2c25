"""Reusable pieces for latency tests: probe processes, delay proxies between them, a Prometheus.

    with LatencyMesh(["tokyo", "fukuoka"], workdir, {("tokyo", "fukuoka"): 15}) as mesh, \\
         PrometheusServer(workdir / "prom", mesh.metrics_targets, scrape_interval=1) as prom:
        ...  # query prom.url; mesh.set_rtt_ms("tokyo", "fukuoka", 40)

Every port is picked free at run time. Each probe measures every other region through a delay
proxy of its own (one per ordered pair), so `set_rtt_ms(a, b, ...)` changes a→b and b→a while
the other pairs keep their RTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.delay_proxy import DelayProxy
from tests.support.waiting import wait_until
from tsunagu.placement.latency import Measurement
from tsunagu.sources.prometheus_latency import PrometheusLatencySource

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_SCRIPT = REPO_ROOT / "hack" / "prometheus.sh"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick; a tiny race is accepted)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class ProbeProcess:
    """A `tsunagu probe` subprocess; its output goes to `log_path`."""

    region: str
    echo_port: int
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def metrics_target(self) -> str:
        return f"{LOOPBACK}:{self.metrics_port}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then waits; kills only if the probe ignores the signal past `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return int(self.process.returncode)


def start_probe(
    region: str,
    workdir: Path,
    *,
    echo_port: int | None = None,
    peers_file: Path | None = None,
    peers: Mapping[str, str] | None = None,
    interval: float = 0.5,
    timeout: float = 1.0,
) -> ProbeProcess:
    """Starts `tsunagu probe` for `region` and waits until its metrics endpoint answers."""
    echo_port = echo_port or free_port()
    metrics_port = free_port()
    command = [
        sys.executable, "-m", "tsunagu.cli", "probe", "--region", region,
        "--listen", f"{LOOPBACK}:{echo_port}", "--metrics-listen", f"{LOOPBACK}:{metrics_port}",
        "--interval", str(interval), "--timeout", str(timeout),
    ]  # fmt: skip
    if peers_file is not None:
        command += ["--peers-file", str(peers_file)]
    for peer_region, address in (peers or {}).items():
        command += ["--peer", f"{peer_region}={address}"]
    log_path = workdir / f"probe-{region}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    probe = ProbeProcess(region, echo_port, metrics_port, log_path, process)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"probe {region} exited: {_tail(log_path)}")
        return _http_ok(f"http://{probe.metrics_target}/metrics")

    try:
        wait_until(ready, timeout=30, interval=0.1, message=f"probe {region} metrics endpoint")
    except BaseException:
        probe.stop()
        raise
    return probe


class LatencyMesh:
    """One probe process per region, measuring each other through per-pair delay proxies."""

    def __init__(
        self,
        regions: Sequence[str],
        workdir: Path,
        rtt_ms: Mapping[tuple[str, str], float] | None = None,
        *,
        probe_interval: float = 0.5,
    ) -> None:
        self.regions = tuple(regions)
        self.workdir = workdir
        self._initial_rtt = dict(rtt_ms or {})
        self._probe_interval = probe_interval
        self.probes: dict[str, ProbeProcess] = {}
        self.proxies: dict[tuple[str, str], DelayProxy] = {}

    def start(self) -> LatencyMesh:
        self.workdir.mkdir(parents=True, exist_ok=True)
        echo_ports = {region: free_port() for region in self.regions}
        try:
            for source in self.regions:
                for target in self.regions:
                    if source != target:
                        proxy = DelayProxy(LOOPBACK, echo_ports[target]).start()
                        self.proxies[(source, target)] = proxy
            for (a, b), rtt in self._initial_rtt.items():
                self.set_rtt_ms(a, b, rtt)
            for region in self.regions:
                peers = {
                    target: proxy.address
                    for (source, target), proxy in self.proxies.items()
                    if source == region
                }
                peers_file = self.workdir / f"peers-{region}.yaml"
                peers_file.write_text("".join(f"{t}: '{a}'\n" for t, a in sorted(peers.items())))
                self.probes[region] = start_probe(
                    region,
                    self.workdir,
                    echo_port=echo_ports[region],
                    peers_file=peers_file,
                    interval=self._probe_interval,
                )
        except BaseException:
            self.stop()
            raise
        return self

    def set_rtt_ms(self, a: str, b: str, rtt_ms: float) -> None:
        """Adds `rtt_ms` to round trips a→b and b→a (half of it each way through each proxy)."""
        for pair in ((a, b), (b, a)):
            self.proxies[pair].set_rtt_ms(rtt_ms)

    @property
    def metrics_targets(self) -> list[str]:
        return [probe.metrics_target for probe in self.probes.values()]

    def stop(self) -> dict[str, int]:
        """Stops probes (SIGTERM) and proxies; returns each probe's exit code."""
        codes = {region: probe.stop() for region, probe in self.probes.items()}
        for proxy in self.proxies.values():
            proxy.stop()
        self.probes.clear()
        self.proxies.clear()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- probe {region} ---\n{_tail(probe.log_path)}"
            for region, probe in self.probes.items()
        )

    def __enter__(self) -> LatencyMesh:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def prometheus_config(
    targets: Iterable[str],
    scrape_interval_seconds: float,
    *,
    job_name: str = "tsunagu-probe",
    honor_labels: bool = False,
) -> str:
    """One scrape job over static targets. `honor_labels` keeps the targets' own `job` label
    (as a training exporter sets it) instead of the scrape job's name."""
    interval = f"{scrape_interval_seconds:g}s"
    target_list = ", ".join(f"'{target}'" for target in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval}\n"
        f"  evaluation_interval: {interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {job_name}\n"
        f"    scrape_timeout: {interval}\n"
        f"    honor_labels: {str(honor_labels).lower()}\n"
        f"    static_configs: [{{targets: [{target_list}]}}]\n"
    )


class PrometheusServer:
    """A real Prometheus run by hack/prometheus.sh on a free port, with its own state dir."""

    def __init__(
        self,
        state_dir: Path,
        scrape_targets: Iterable[str],
        *,
        scrape_interval: float = 1.0,
        port: int | None = None,
        job_name: str = "tsunagu-probe",
        honor_labels: bool = False,
        config: str | None = None,
        listen_host: str = LOOPBACK,
    ) -> None:
        """`config` replaces the static scrape of `scrape_targets`; `listen_host` is where it
        answers (the host's address when pods must reach it)."""
        self.state_dir = state_dir
        self.listen_host = listen_host
        self.port = port or free_port()
        self.config_path = state_dir / "prometheus.yml"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            config
            or prometheus_config(
                scrape_targets, scrape_interval, job_name=job_name, honor_labels=honor_labels
            )
        )

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PROM_PORT": str(self.port),
            "PROM_LISTEN": self.listen_host,
            "TSUNAGU_STATE": str(self.state_dir),
        }
        return subprocess.run(
            [str(PROMETHEUS_SCRIPT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> PrometheusServer:
        """Starts (or restarts, on the same port and data) and waits for /-/ready."""
        # The first start may install the package with apt-get; allow for that.
        result = self._script("up", str(self.config_path), timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"hack/prometheus.sh up failed: {result.stderr.strip()}")
        return self

    def stop(self) -> None:
        result = self._script("down", timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"hack/prometheus.sh down failed: {result.stderr.strip()}")

    def is_running(self) -> bool:
        return self._script("status", timeout=30).returncode == 0

    def log(self) -> str:
        return _tail(self.state_dir / "prometheus.log")

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Update:
    received_at: float  # unix seconds
    measurements: tuple[Measurement, ...]


class BackgroundPoller:
    """Runs `source.poll` in a thread with its own event loop; keeps every update it delivers."""

    def __init__(
        self, source: PrometheusLatencySource, known_regions: Collection[str] | None = None
    ) -> None:
        self.source = source
        self._known_regions = known_regions
        self._lock = threading.Lock()
        self._updates: list[Update] = []
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._task_ready = threading.Event()

    def start(self) -> BackgroundPoller:
        def on_update(measurements: tuple[Measurement, ...]) -> None:
            with self._lock:
                self._updates.append(Update(time.time(), measurements))

        async def main() -> None:
            self._task = asyncio.current_task()
            self._task_ready.set()
            await self.source.poll(on_update, known_regions=lambda: self._known_regions)

        def run() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, name="latency-poller", daemon=True)
        self._thread.start()
        self._task_ready.wait(10)
        return self

    @property
    def updates(self) -> list[Update]:
        with self._lock:
            return list(self._updates)

    @property
    def latest(self) -> tuple[Measurement, ...]:
        with self._lock:
            return self._updates[-1].measurements if self._updates else ()

    @property
    def updated_at(self) -> float:
        with self._lock:
            return self._updates[-1].received_at if self._updates else 0.0

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(15)
        self._loop.close()

    def __enter__(self) -> BackgroundPoller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def rtt_of(measurements: Iterable[Measurement], source: str, target: str) -> float | None:
    for measurement in measurements:
        if (measurement.source_region, measurement.target_region) == (source, target):
            return measurement.rtt_ms
    return None


def close_to(measured_ms: float, injected_ms: float) -> bool:
    """Whether a p95 read back from Prometheus stands for the RTT injected by the proxies.

    Never below it; above it by at most one histogram bucket (~10%: histogram_quantile puts a p95
    near the top of its bucket) plus the path's own cost: loopback, the proxy's timer overshoot
    (asyncio wakes up to ~1 ms late, in each direction) and scheduling on a busy machine.
    """
    return injected_ms <= measured_ms <= injected_ms * 1.15 + 5.0
