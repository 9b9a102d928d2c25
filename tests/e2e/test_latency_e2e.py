"""Measured latency end to end: probe processes → delay proxies → real Prometheus → the source.

Three `tsunagu probe` processes (tokyo, osaka, fukuoka) measure each other through delay proxies;
a real Prometheus (hack/prometheus.sh) scrapes them every second; the Prometheus latency source
with its default queries reads the RTTs back. The test follows an RTT change, a Prometheus outage
(counted, no crash) and the recovery after Prometheus comes back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.latency_harness import (
    BackgroundPoller,
    LatencyMesh,
    PrometheusServer,
    close_to,
    rtt_of,
)
from tests.support.waiting import wait_until
from tsunagu.sources.latency_settings import PrometheusLatencySettings
from tsunagu.sources.prometheus_latency import (
    LatencySourceError,
    LatencySourceMetrics,
    PrometheusLatencySource,
)

pytestmark = pytest.mark.e2e

REGIONS = ("tokyo", "osaka", "fukuoka")
INITIAL_RTT_MS = {("tokyo", "osaka"): 8.0, ("tokyo", "fukuoka"): 15.0, ("osaka", "fukuoka"): 10.0}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LatencyMesh]:
    with LatencyMesh(REGIONS, tmp_path / "mesh", INITIAL_RTT_MS) as started:
        yield started


@pytest.fixture
def prometheus(tmp_path: Path, mesh: LatencyMesh) -> Iterator[PrometheusServer]:
    server = PrometheusServer(tmp_path / "prometheus", mesh.metrics_targets, scrape_interval=1)
    with server:
        yield server


def test_measured_latency_follows_the_network_and_survives_a_prometheus_outage(
    mesh: LatencyMesh, prometheus: PrometheusServer
) -> None:
    registry = CollectorRegistry()
    settings = PrometheusLatencySettings(url=prometheus.url, interval_seconds=1, timeout_seconds=2)
    source = PrometheusLatencySource(settings, metrics=LatencySourceMetrics(registry))
    poller = BackgroundPoller(source, known_regions=set(REGIONS))
    poller.start()
    try:
        # Every ordered pair is measured, each about the RTT its proxies inject.
        def all_pairs_close() -> bool:
            latest = poller.latest
            for (a, b), injected in INITIAL_RTT_MS.items():
                for pair in ((a, b), (b, a)):
                    measured = rtt_of(latest, *pair)
                    # Raised, not returned: wait_until reports the last miss if time runs out.
                    if measured is None or not close_to(measured, injected):
                        raise AssertionError(f"{pair}: {measured} ms, injected {injected} ms")
            return True

        wait_until(all_pairs_close, timeout=90, message="all six pairs near their injected RTT")
        assert len(poller.latest) == 6

        mesh.set_rtt_ms("tokyo", "fukuoka", 40.0)
        wait_until(
            lambda: close_to(rtt_of(poller.latest, "tokyo", "fukuoka") or 0.0, 40.0),
            timeout=60,
            message="tokyo→fukuoka to follow the change to 40 ms",
        )
        assert close_to(rtt_of(poller.latest, "tokyo", "osaka") or 0.0, 8.0)

        prometheus.stop()
        failures_before = _failures(registry)
        with pytest.raises(LatencySourceError, match="cannot connect"):
            source.fetch(time.time())
        wait_until(
            lambda: _failures(registry) >= failures_before + 3,
            timeout=30,
            message="the poller to count failed refreshes while Prometheus is down",
        )
        assert poller.alive

        prometheus.start()
        restarted_at = time.time()
        wait_until(
            lambda: (
                poller.updated_at > restarted_at
                and close_to(rtt_of(poller.latest, "tokyo", "fukuoka") or 0.0, 40.0)
            ),
            timeout=90,
            message="measurements to come back after Prometheus restarts",
        )
        assert poller.alive
    except BaseException:
        print(mesh.logs())
        print(f"--- prometheus ---\n{prometheus.log()}")
        raise
    finally:
        poller.stop()
        source.close()


def _failures(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("tsunagu_latency_query_failures_total", {"query": "rtt"})
    return 0.0 if value is None else value
