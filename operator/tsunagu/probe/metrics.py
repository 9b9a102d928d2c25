"""The probe's Prometheus metrics; the default latency query of the operator reads these names."""

from __future__ import annotations

from contextlib import suppress
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RTT_METRIC = "tsunagu_probe_rtt_seconds"
FAILURES_METRIC = "tsunagu_probe_failures_total"
SOURCE_LABEL = "source_region"
TARGET_LABEL = "target_region"

# About 10% apart from 0.5 ms to 1 s: histogram_quantile interpolates inside a bucket, so the
# bucket width bounds the error of the quantile the operator reads (p95 lands near the upper
# bound, i.e. up to ~10% high). Round values keep the `le` labels readable.
RTT_BUCKETS_SECONDS: tuple[float, ...] = tuple(
    ms / 1000.0
    for ms in (
        *(0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.65, 1.8, 2.0, 2.2, 2.4, 2.7),
        *(3.0, 3.3, 3.6, 4.0, 4.4, 4.8, 5.3, 5.8, 6.4, 7.0, 7.7, 8.5, 9.3),
        *(10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.5, 18.0, 20.0, 22.0, 24.0, 27.0),
        *(30.0, 33.0, 36.0, 40.0, 44.0, 48.0, 53.0, 58.0, 64.0, 70.0, 77.0, 85.0, 93.0),
        *(100.0, 110.0, 120.0, 135.0, 150.0, 165.0, 180.0, 200.0, 220.0, 240.0, 270.0),
        *(300.0, 330.0, 360.0, 400.0, 440.0, 480.0, 530.0, 580.0, 640.0, 700.0, 770.0),
        *(850.0, 930.0, 1000.0),
    )
)


class FailureReason(StrEnum):
    """Why one round trip produced no measurement (the `reason` label of the failure counter)."""

    REFUSED = "refused"  # nothing listens at the peer's address
    CONNECT_TIMEOUT = "connect_timeout"
    UNREACHABLE = "unreachable"  # name resolution or routing failed
    TIMEOUT = "timeout"  # connected, but the echo did not come back in time
    CLOSED = "closed"  # the peer closed or reset the connection
    MISMATCH = "mismatch"  # something answered, but not with our payload


class ProbeMetrics:
    """Metrics of one probe; a registry of its own lets tests run several probes in a process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        labels = (SOURCE_LABEL, TARGET_LABEL)
        self.rtt = Histogram(
            RTT_METRIC,
            "TCP round-trip time of a small echoed payload to another region's probe.",
            labels,
            buckets=RTT_BUCKETS_SECONDS,
            registry=registry,
        )
        self.last_rtt = Gauge(
            "tsunagu_probe_last_rtt_seconds",
            "The most recent successful round-trip time to another region's probe.",
            labels,
            registry=registry,
        )
        self.failures = Counter(
            FAILURES_METRIC,
            "Round trips to another region's probe that produced no measurement, by reason.",
            (*labels, "reason"),
            registry=registry,
        )
        self.peers = Gauge(
            "tsunagu_probe_peers", "Number of other regions this probe measures.", registry=registry
        )

    def observe(self, source: str, target: str, rtt_seconds: float) -> None:
        self.rtt.labels(source, target).observe(rtt_seconds)
        self.last_rtt.labels(source, target).set(rtt_seconds)

    def count_failure(self, source: str, target: str, reason: FailureReason) -> None:
        self.failures.labels(source, target, reason.value).inc()

    def forget_peer(self, source: str, target: str) -> None:
        """Drops a removed peer's series so its last RTT does not look current forever."""
        # KeyError: that series was never created (no success, or no failure of that reason).
        for metric in (self.rtt, self.last_rtt):
            with suppress(KeyError):
                metric.remove(source, target)
        for reason in FailureReason:
            with suppress(KeyError):
                self.failures.remove(source, target, reason.value)
