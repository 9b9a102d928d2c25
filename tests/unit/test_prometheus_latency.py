"""The Prometheus latency source: sample conversion, fetch against a fake Prometheus, the poller."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from prometheus_client import CollectorRegistry

from tests.support.waiting import wait_until
from tsunagu.placement.latency import Measurement
from tsunagu.sources.latency_settings import (
    DEFAULT_JITTER_QUERY,
    DEFAULT_RTT_QUERY,
    PrometheusLatencySettings,
    SettingsError,
    ValueUnit,
)
from tsunagu.sources.prometheus_latency import (
    LatencySourceError,
    LatencySourceMetrics,
    PrometheusLatencySource,
    RejectReason,
    convert_query_results,
)

T0 = 1_800_000_000.0
SETTINGS = PrometheusLatencySettings()


def sample(value: object, source: str | None = "tokyo", target: str | None = "fukuoka") -> Any:
    labels = {"source_region": source, "target_region": target}
    return {"metric": {k: v for k, v in labels.items() if v is not None}, "value": [T0, value]}


# -- the pure conversion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "known_regions", "reason"),
    [
        pytest.param(sample("NaN"), None, RejectReason.NOT_A_NUMBER, id="nan-no-traffic"),
        pytest.param(sample("+Inf"), None, RejectReason.INFINITE, id="plus-inf"),
        pytest.param(sample("-Inf"), None, RejectReason.INFINITE, id="minus-inf"),
        pytest.param(sample("-0.001"), None, RejectReason.NEGATIVE, id="negative"),
        pytest.param(sample("10.5"), None, RejectReason.ABSURD, id="over-10s"),
        pytest.param(sample("0.01", target=None), None, RejectReason.MISSING_LABEL, id="no-target"),
        pytest.param(sample("0.01", source=None), None, RejectReason.MISSING_LABEL, id="no-source"),
        pytest.param(
            sample("0.01", source=""), None, RejectReason.MISSING_LABEL, id="empty-source"
        ),
        pytest.param(sample("0.01", target="tokyo"), None, RejectReason.SELF_PAIR, id="self-pair"),
        pytest.param(
            sample("0.01", target="nara"),
            {"tokyo", "osaka", "fukuoka"},
            RejectReason.UNKNOWN_REGION,
            id="unknown-target",
        ),
        pytest.param(
            sample("0.01", source="nara"),
            {"tokyo", "osaka", "fukuoka"},
            RejectReason.UNKNOWN_REGION,
            id="unknown-source",
        ),
        pytest.param(sample("fast"), None, RejectReason.MALFORMED, id="value-not-a-number"),
        pytest.param(sample(None), None, RejectReason.MALFORMED, id="value-null"),
        pytest.param(
            {"metric": {"source_region": "tokyo", "target_region": "fukuoka"}, "value": [T0]},
            None,
            RejectReason.MALFORMED,
            id="value-without-timestamp",
        ),
        pytest.param(
            {"metric": {"source_region": "tokyo", "target_region": "fukuoka"}, "values": []},
            None,
            RejectReason.MALFORMED,
            id="range-vector-not-instant",
        ),
        pytest.param(
            {"metric": {"source_region": "tokyo", "target_region": "fukuoka"}, "value": ["x", "1"]},
            None,
            RejectReason.MALFORMED,
            id="bad-timestamp",
        ),
        pytest.param("tokyo fukuoka 0.01", None, RejectReason.MALFORMED, id="not-a-dict"),
        pytest.param({"value": [T0, "0.01"]}, None, RejectReason.MALFORMED, id="no-metric"),
    ],
)
def test_garbage_sample_is_skipped_and_counted_under_its_reason(
    raw: object, known_regions: set[str] | None, reason: RejectReason
) -> None:
    good = sample("0.015", source="osaka", target="tokyo")
    conversion = convert_query_results([raw, good], None, SETTINGS, known_regions)
    assert [r.reason for r in conversion.rejected] == [reason]
    assert conversion.rejected[0].query == "rtt"
    # The garbage next to it does not spoil a good sample.
    assert [m.source_region for m in conversion.measurements] == ["osaka"]


@pytest.mark.parametrize(
    ("result", "reasons"),
    [
        pytest.param({"resultType": "scalar"}, [RejectReason.MALFORMED], id="result-not-a-list"),
        pytest.param([], [], id="empty-result"),
    ],
)
def test_result_of_the_wrong_shape_gives_no_measurements(
    result: object, reasons: list[RejectReason]
) -> None:
    conversion = convert_query_results(result, None, SETTINGS)
    assert conversion.measurements == ()
    assert [r.reason for r in conversion.rejected] == reasons


def test_seconds_become_milliseconds_and_observed_at_is_the_sample_time() -> None:
    conversion = convert_query_results(
        [sample("0.0155"), sample("0.002", "osaka", "tokyo")],
        [sample("0.0012"), sample("0.0004", "osaka", "tokyo")],
        SETTINGS,
        {"tokyo", "osaka", "fukuoka"},
    )
    assert conversion.rejected == ()
    assert conversion.measurements == (
        Measurement(
            "osaka", "tokyo", pytest.approx(2.0), pytest.approx(0.4), T0, source="Prometheus"
        ),
        Measurement(
            "tokyo", "fukuoka", pytest.approx(15.5), pytest.approx(1.2), T0, source="Prometheus"
        ),
    )


def test_custom_labels_and_millisecond_values_as_from_another_exporter() -> None:
    settings = PrometheusLatencySettings(
        rtt_query="max by (src, dst) (rtt_ms)",
        jitter_query=None,
        source_label="src",
        target_label="dst",
        unit=ValueUnit.MILLISECONDS,
    )
    raw = [{"metric": {"src": "tokyo", "dst": "osaka", "job": "x"}, "value": [T0, "7.25"]}]
    conversion = convert_query_results(raw, None, settings)
    assert conversion.measurements == (
        Measurement("tokyo", "osaka", 7.25, 0.0, T0, source="Prometheus"),
    )


@pytest.mark.parametrize(
    ("jitter_value", "expected_jitter_ms", "reasons"),
    [
        pytest.param("0.003", 3.0, [], id="good-jitter"),
        pytest.param("NaN", 0.0, [RejectReason.NOT_A_NUMBER], id="nan-jitter-counts-as-zero"),
        pytest.param("-0.5", 0.0, [RejectReason.NEGATIVE], id="negative-jitter-counts-as-zero"),
        pytest.param(None, 0.0, [], id="no-jitter-series"),
    ],
)
def test_jitter_is_matched_per_pair_and_bad_jitter_does_not_drop_the_rtt(
    jitter_value: str | None, expected_jitter_ms: float, reasons: list[RejectReason]
) -> None:
    jitter = [] if jitter_value is None else [sample(jitter_value)]
    conversion = convert_query_results([sample("0.015")], jitter, SETTINGS)
    assert [m.jitter_ms for m in conversion.measurements] == [pytest.approx(expected_jitter_ms)]
    assert [(r.reason, r.query) for r in conversion.rejected] == [(r, "jitter") for r in reasons]


def test_two_series_for_one_pair_keep_the_larger_rtt_and_count_a_duplicate() -> None:
    conversion = convert_query_results([sample("0.010"), sample("0.020")], None, SETTINGS)
    assert [m.rtt_ms for m in conversion.measurements] == [pytest.approx(20.0)]
    assert [r.reason for r in conversion.rejected] == [RejectReason.DUPLICATE_PAIR]


def test_default_queries_read_the_probe_histogram_per_ordered_pair() -> None:
    assert "tsunagu_probe_rtt_seconds_bucket[20s]" in DEFAULT_RTT_QUERY
    assert DEFAULT_RTT_QUERY.startswith("histogram_quantile(0.95,")
    assert "sum by (source_region, target_region, le)" in DEFAULT_RTT_QUERY
    assert "histogram_quantile(0.5," in DEFAULT_JITTER_QUERY


# -- settings from configuration ---------------------------------------------------------------


def test_settings_from_mapping_reads_camel_case_fields() -> None:
    settings = PrometheusLatencySettings.from_mapping(
        {"url": "http://prom:9090", "jitterQuery": None, "unit": "Milliseconds", "maxRttMs": 500}
    )
    assert settings.url == "http://prom:9090"
    assert settings.jitter_query is None
    assert settings.unit is ValueUnit.MILLISECONDS
    assert settings.max_rtt_ms == 500.0
    assert settings.rtt_query == DEFAULT_RTT_QUERY


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"intervalSecond": 5}, "prometheus.intervalSecond: unknown field", id="typo"),
        pytest.param({"intervalSeconds": 0}, "prometheus.intervalSeconds: must be", id="zero"),
        pytest.param({"timeoutSeconds": "5"}, "prometheus.timeoutSeconds: must be", id="string"),
        pytest.param({"rttQuery": " "}, "prometheus.rttQuery: must be a non-empty", id="blank"),
        pytest.param({"sourceLabel": "source-region"}, "prometheus.sourceLabel: ", id="label"),
        pytest.param({"targetLabel": "source_region"}, "prometheus.targetLabel: must", id="same"),
        pytest.param({"unit": "Minutes"}, "prometheus.unit: must be one of", id="unit"),
        pytest.param({"jitterQuery": 3}, "prometheus.jitterQuery: must be", id="jitter-type"),
    ],
)
def test_settings_from_mapping_names_the_bad_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace(".", r"\.")):
        PrometheusLatencySettings.from_mapping(data)


# -- fetch against a fake Prometheus HTTP endpoint -------------------------------------------


@dataclass
class FakePrometheus:
    """Answers /api/v1/query from `mode`; `release` ends a hanging request early at teardown."""

    mode: str = "ok"
    rtt_result: list[Any] = field(default_factory=list)
    jitter_result: list[Any] = field(default_factory=list)
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        params = parse_qs(urlparse(handler.path).query)
        self.queries.append(params)
        if self.mode == "hang":
            self.release.wait(30)
            return
        if self.mode == "status500":
            self._send(handler, 500, b'{"status":"error","error":"boom"}')
            return
        if self.mode == "not-json":
            self._send(handler, 200, b"<html>proxy error</html>")
            return
        if self.mode == "wrong-shape":
            self._send(handler, 200, b'{"status":"success"}')
            return
        is_jitter = "histogram_quantile(0.5" in params.get("query", [""])[0]
        result = self.jitter_result if is_jitter else self.rtt_result
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        self._send(handler, 200, json.dumps(body).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.respond(self)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output readable

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def make_source(url: str, **overrides: Any) -> tuple[PrometheusLatencySource, CollectorRegistry]:
    registry = CollectorRegistry()
    settings = PrometheusLatencySettings(url=url, timeout_seconds=0.5, **overrides)
    return PrometheusLatencySource(settings, metrics=LatencySourceMetrics(registry)), registry


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_fetch_converts_and_counts_rejects(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.rtt_result = [sample("0.015"), sample("NaN", "osaka", "tokyo"), sample("99")]
    fake_prometheus.jitter_result = [sample("0.001")]
    source, registry = make_source(fake_prometheus.url)
    measurements = source.fetch(T0 + 5, known_regions={"tokyo", "osaka", "fukuoka"})
    assert measurements == (
        Measurement(
            "tokyo", "fukuoka", pytest.approx(15.0), pytest.approx(1.0), T0, source="Prometheus"
        ),
    )
    rejected = "tsunagu_latency_samples_rejected_total"
    assert counter(registry, rejected, reason="not_a_number") == 1
    assert counter(registry, rejected, reason="absurd") == 1
    assert counter(registry, rejected, reason="self_pair") == 0
    assert counter(registry, "tsunagu_latency_measured_pairs") == 1
    assert counter(registry, "tsunagu_latency_last_refresh_timestamp_seconds") > 0
    # The query is evaluated at the caller's `now`, so the result is that moment's view.
    assert fake_prometheus.queries[0]["time"] == [f"{T0 + 5:.3f}"]


def test_fetch_without_jitter_query_sends_one_query(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.rtt_result = [sample("0.015")]
    source, _ = make_source(fake_prometheus.url, jitter_query=None)
    assert [m.jitter_ms for m in source.fetch(T0)] == [0.0]
    assert len(fake_prometheus.queries) == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        pytest.param("status500", "failed: HTTP status 500", id="http-500"),
        pytest.param("not-json", "failed: the response is not JSON", id="body-not-json"),
        pytest.param("wrong-shape", "failed: the response has no data.result", id="no-data"),
        pytest.param("hang", r"failed: no answer within 0.5s", id="timeout"),
    ],
)
def test_fetch_failure_is_counted_and_raised_as_source_error(
    fake_prometheus: FakePrometheus, mode: str, message: str
) -> None:
    fake_prometheus.mode = mode
    source, registry = make_source(fake_prometheus.url)
    with pytest.raises(LatencySourceError, match=message):
        source.fetch(T0)
    assert counter(registry, "tsunagu_latency_query_failures_total", query="rtt") == 1
    assert source.last_error is not None
    assert counter(registry, "tsunagu_latency_last_refresh_timestamp_seconds") == 0


def test_fetch_against_nothing_listening_is_counted() -> None:
    source, registry = make_source("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(LatencySourceError, match=r"rtt query to \S+:9 failed: cannot connect"):
        source.fetch(T0)
    assert counter(registry, "tsunagu_latency_query_failures_total", query="rtt") == 1


# -- the poller --------------------------------------------------------------------------------


def test_poller_survives_failures_and_a_failing_callback(fake_prometheus: FakePrometheus) -> None:
    fake_prometheus.mode = "status500"
    fake_prometheus.rtt_result = [sample("0.015")]
    source, registry = make_source(fake_prometheus.url, interval_seconds=0.05)
    updates: list[tuple[Measurement, ...]] = []

    async def scenario() -> None:
        received = asyncio.Event()

        def on_update(measurements: tuple[Measurement, ...]) -> None:
            updates.append(measurements)
            received.set()
            if len(updates) == 1:
                raise RuntimeError("a bug in the consumer")

        poller = asyncio.create_task(source.poll(on_update, clock=lambda: T0))
        await asyncio.to_thread(
            wait_until,
            lambda: counter(registry, "tsunagu_latency_query_failures_total", query="rtt") >= 3,
            timeout=10,
            interval=0.02,
            message="three failed refreshes",
        )
        assert not poller.done()
        fake_prometheus.mode = "ok"
        async with asyncio.timeout(10):
            while len(updates) < 2:  # the second update proves the callback's error was survived
                await received.wait()
                received.clear()
        poller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poller

    asyncio.run(scenario())
    assert updates[0] == (
        Measurement("tokyo", "fukuoka", pytest.approx(15.0), 0.0, T0, source="Prometheus"),
    )


def test_poller_passes_known_regions_and_awaits_an_async_callback(
    fake_prometheus: FakePrometheus,
) -> None:
    fake_prometheus.rtt_result = [sample("0.015"), sample("0.020", "tokyo", "nara")]
    source, registry = make_source(fake_prometheus.url, interval_seconds=0.05)

    async def scenario() -> tuple[Measurement, ...]:
        delivered: asyncio.Queue[tuple[Measurement, ...]] = asyncio.Queue()

        async def on_update(measurements: tuple[Measurement, ...]) -> None:
            await delivered.put(measurements)

        poller = asyncio.create_task(
            source.poll(on_update, known_regions=lambda: {"tokyo", "fukuoka"})
        )
        try:
            async with asyncio.timeout(10):
                return await delivered.get()
        finally:
            poller.cancel()

    measurements = asyncio.run(scenario())
    assert [(m.source_region, m.target_region) for m in measurements] == [("tokyo", "fukuoka")]
    assert counter(registry, "tsunagu_latency_samples_rejected_total", reason="unknown_region") >= 1
