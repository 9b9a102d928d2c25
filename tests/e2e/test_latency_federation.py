"""Latency across clusters, the Prometheus layout of docs/clusters.md: each member cluster's
Prometheus scrapes the probes of its own regions; the hub's Prometheus scrapes the hub's probes
and federates the members' probe series (`/federate`, `honor_labels`); the operator's latency
source reads every ordered pair from the hub's Prometheus alone.

Real probes measure each other through delay proxies standing for the WAN; three real
Prometheus servers (hack/prometheus.sh): the hub's and one per member.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
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
from tsunagu.sources.prometheus_latency import LatencySourceMetrics, PrometheusLatencySource

pytestmark = pytest.mark.e2e

HUB_REGION = "tokyo"
# Member cluster → its region.
MEMBERS = {"fukuoka-cloud": "fukuoka", "hokkaido-cloud": "hokkaido"}
RTT_MS = {("tokyo", "fukuoka"): 15.0, ("tokyo", "hokkaido"): 20.0, ("fukuoka", "hokkaido"): 25.0}


def member_config(probe: str, cluster: str) -> str:
    """A member's own Prometheus: its probes, every series labelled with its cluster."""
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        f"  external_labels: {{cluster: {cluster}}}\n"
        "scrape_configs:\n"
        "  - job_name: tsunagu-probe\n"
        "    scrape_timeout: 1s\n"
        f"    static_configs: [{{targets: ['{probe}']}}]\n"
    )


def hub_config(probe: str, members: list[str]) -> str:
    """The hub's Prometheus: its own probes, and the members' probe series by federation."""
    targets = ", ".join(f"'{member}'" for member in members)
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tsunagu-probe\n"
        "    scrape_timeout: 1s\n"
        f"    static_configs: [{{targets: ['{probe}']}}]\n"
        "  - job_name: federate-members\n"
        "    scrape_timeout: 1s\n"
        "    honor_labels: true\n"
        "    metrics_path: /federate\n"
        "    params: {'match[]': ['{__name__=~\"tsunagu_probe_.*\"}']}\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n"
    )


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LatencyMesh]:
    regions = (HUB_REGION, *MEMBERS.values())
    with LatencyMesh(regions, tmp_path / "mesh", RTT_MS) as started:
        yield started


def clusters_seen(prometheus: PrometheusServer) -> set[str]:
    """The `cluster` labels of the probe series in a Prometheus (federated ones carry it)."""
    promql = "count by (cluster) (tsunagu_probe_rtt_seconds_count)"
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}", timeout=5) as answer:
        result = json.load(answer)["data"]["result"]
    return {series["metric"].get("cluster", "") for series in result}


def test_the_hub_reads_every_pair_of_every_cluster_from_its_own_prometheus(
    mesh: LatencyMesh, tmp_path: Path
) -> None:
    probes = dict(zip(mesh.regions, mesh.metrics_targets, strict=True))
    members = [
        PrometheusServer(
            tmp_path / f"prometheus-{cluster}", [], config=member_config(probes[region], cluster)
        )
        for cluster, region in MEMBERS.items()
    ]
    for member in members:
        member.start()
    hub = PrometheusServer(
        tmp_path / "prometheus-hub", [],
        config=hub_config(probes[HUB_REGION], [f"127.0.0.1:{m.port}" for m in members]),
    )  # fmt: skip
    hub.start()
    settings = PrometheusLatencySettings(url=hub.url, interval_seconds=1, timeout_seconds=2)
    source = PrometheusLatencySource(settings, metrics=LatencySourceMetrics(CollectorRegistry()))
    poller = BackgroundPoller(source, known_regions=set(mesh.regions))
    poller.start()
    try:

        def every_pair_close() -> bool:
            for (a, b), injected in RTT_MS.items():
                for pair in ((a, b), (b, a)):
                    measured = rtt_of(poller.latest, *pair)
                    if measured is None or not close_to(measured, injected):
                        raise AssertionError(f"{pair}: {measured} ms, injected {injected} ms")
            return True

        wait_until(every_pair_close, timeout=120, message="all six pairs near their injected RTT")
        # The members' measurements came through federation, labelled with their cluster;
        # the hub's own probe is scraped directly.
        assert clusters_seen(hub) == {"", *MEMBERS}

        # A member's WAN link slows down: the hub sees it through the member's Prometheus.
        mesh.set_rtt_ms("fukuoka", "tokyo", 45.0)
        wait_until(
            lambda: close_to(rtt_of(poller.latest, "fukuoka", "tokyo") or 0.0, 45.0),
            timeout=60, message="fukuoka→tokyo to follow the change to 45 ms",
        )  # fmt: skip
    except BaseException:
        print(mesh.logs())
        for server in (hub, *members):
            print(f"--- {server.state_dir.name} ---\n{server.log()}")
        raise
    finally:
        poller.stop()
        source.close()
        for server in (hub, *members):
            server.stop()
