"""Inter-region latency from Prometheus: a PromQL query in, `Measurement`s out.

The RTT query returns one series per ordered region pair, labelled with the source and the target
region; its value is the RTT to plan with (default: the p95 of the probe's histogram over a short
window, in seconds). The optional jitter query returns the spread for the same pairs (default:
p95 − p50 over the same window). Staleness is not judged here: each measurement carries the
sample's timestamp and `LatencyMatrix.build(..., staleness_seconds=...)` drops old ones.

Bad samples never stop a refresh: NaN (a pair with no round trips in the window), ±Inf, negative
or absurd (> 10 s) values, missing labels, self-pairs and unknown regions are skipped and counted
by reason. A failed query fails the whole refresh (the previous matrix stays until it goes stale)
and is counted too; the poller never raises.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NoReturn

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from urllib3 import exceptions as urllib3_exceptions

from tsunagu.placement.latency import Measurement
from tsunagu.sources.latency import UpdateCallback
from tsunagu.sources.latency_settings import PrometheusLatencySettings
from tsunagu.sources.prometheus_http import connect
from tsunagu.sources.promql import SampleProblem, read_instant_sample

log = logging.getLogger(__name__)

# What every measurement of this source says it came from (status and Events show it).
SOURCE_NAME = "Prometheus"


class RejectReason(StrEnum):
    """Why a sample was skipped (the `reason` label of the rejection counter)."""

    MALFORMED = "malformed"  # not a {metric, value: [ts, "v"]} instant sample
    MISSING_LABEL = "missing_label"
    NOT_A_NUMBER = "not_a_number"
    INFINITE = "infinite"
    NEGATIVE = "negative"
    ABSURD = "absurd"
    SELF_PAIR = "self_pair"
    UNKNOWN_REGION = "unknown_region"
    DUPLICATE_PAIR = "duplicate_pair"  # the query did not aggregate to one series per pair


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    query: str  # "rtt" or "jitter"
    detail: str


@dataclass(frozen=True)
class Conversion:
    measurements: tuple[Measurement, ...]
    rejected: tuple[Rejected, ...] = field(default=())


@dataclass(frozen=True)
class _Sample:
    source: str
    target: str
    value_ms: float
    timestamp: float


def _check_sample(
    raw: object,
    settings: PrometheusLatencySettings,
    known_regions: Collection[str] | None,
) -> _Sample | RejectReason:
    sample = read_instant_sample(raw, settings.source_label, settings.target_label)
    if isinstance(sample, SampleProblem):
        return RejectReason(sample.value)
    source, target, timestamp, number = sample.first, sample.second, sample.timestamp, sample.value
    value_ms = number * settings.unit.to_ms
    if value_ms > settings.max_rtt_ms:
        return RejectReason.ABSURD
    if source == target:
        return RejectReason.SELF_PAIR
    if known_regions is not None and (source not in known_regions or target not in known_regions):
        return RejectReason.UNKNOWN_REGION
    return _Sample(source, target, value_ms, timestamp)


def _pairs(
    result: object,
    query: str,
    settings: PrometheusLatencySettings,
    known_regions: Collection[str] | None,
    rejected: list[Rejected],
) -> dict[tuple[str, str], _Sample]:
    if not isinstance(result, list):
        rejected.append(Rejected(RejectReason.MALFORMED, query, f"result is {type(result)}"))
        return {}
    pairs: dict[tuple[str, str], _Sample] = {}
    for raw in result:
        checked = _check_sample(raw, settings, known_regions)
        if isinstance(checked, RejectReason):
            rejected.append(Rejected(checked, query, repr(raw)[:200]))
            continue
        key = (checked.source, checked.target)
        earlier = pairs.get(key)
        if earlier is not None:
            # Two series for one pair: keep the worse value, as the engine should be pessimistic.
            rejected.append(Rejected(RejectReason.DUPLICATE_PAIR, query, f"{key[0]}->{key[1]}"))
            if earlier.value_ms >= checked.value_ms:
                continue
        pairs[key] = checked
    return pairs


def convert_query_results(
    rtt_result: object,
    jitter_result: object | None,
    settings: PrometheusLatencySettings,
    known_regions: Collection[str] | None = None,
) -> Conversion:
    """Turns raw instant-query results (lists of {metric, value}) into measurements + rejects.

    Pure. A pair without a usable jitter sample gets 0 ms jitter; the pair still counts.
    """
    rejected: list[Rejected] = []
    rtts = _pairs(rtt_result, "rtt", settings, known_regions, rejected)
    jitters = {}
    if jitter_result is not None:
        jitters = _pairs(jitter_result, "jitter", settings, known_regions, rejected)
    measurements = tuple(
        Measurement(
            source_region=source,
            target_region=target,
            rtt_ms=sample.value_ms,
            jitter_ms=jitters[(source, target)].value_ms if (source, target) in jitters else 0.0,
            observed_at=sample.timestamp,
            source=SOURCE_NAME,
        )
        for (source, target), sample in sorted(rtts.items())
    )
    return Conversion(measurements=measurements, rejected=tuple(rejected))


class LatencySourceMetrics:
    """The source's own metrics; tests pass a private registry, the operator the default one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rejected = Counter(
            "tsunagu_latency_samples_rejected_total",
            "Latency samples from Prometheus skipped as unusable, by reason.",
            ("reason",),
            registry=registry,
        )
        self.query_failures = Counter(
            "tsunagu_latency_query_failures_total",
            "Latency queries to Prometheus that failed (connection, HTTP status, bad response).",
            ("query",),
            registry=registry,
        )
        self.last_refresh = Gauge(
            "tsunagu_latency_last_refresh_timestamp_seconds",
            "Unix time of the last successful latency refresh from Prometheus.",
            registry=registry,
        )
        self.measured_pairs = Gauge(
            "tsunagu_latency_measured_pairs",
            "Ordered region pairs with a usable measurement in the last successful refresh.",
            registry=registry,
        )
        # Series exist from the start, so rate() and alerts see a 0 rather than nothing.
        for reason in RejectReason:
            self.rejected.labels(reason.value)
        for query in ("rtt", "jitter"):
            self.query_failures.labels(query)


_default_metrics: LatencySourceMetrics | None = None


def default_metrics() -> LatencySourceMetrics:
    """The metrics on the process-wide registry, created once (names must be unique there)."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = LatencySourceMetrics(REGISTRY)
    return _default_metrics


class LatencySourceError(Exception):
    """A refresh failed; the message names the query and the cause."""


class PrometheusLatencySource:
    def __init__(
        self,
        settings: PrometheusLatencySettings,
        *,
        metrics: LatencySourceMetrics | None = None,
        client: PrometheusConnect | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else default_metrics()
        self._client = client or connect(settings.url, settings.timeout_seconds)
        self.last_success: float | None = None
        self.last_error: str | None = None

    def fetch(
        self, now: float, known_regions: Collection[str] | None = None
    ) -> tuple[Measurement, ...]:
        """Queries Prometheus at time `now` (blocking); raises LatencySourceError when it fails.

        `known_regions`, when given, drops pairs naming any other region.
        """
        rtt = self._query("rtt", self.settings.rtt_query, now)
        jitter = None
        if self.settings.jitter_query is not None:
            jitter = self._query("jitter", self.settings.jitter_query, now)
        conversion = convert_query_results(rtt, jitter, self.settings, known_regions)
        for rejected in conversion.rejected:
            self.metrics.rejected.labels(rejected.reason.value).inc()
            log.debug(
                "%s sample rejected (%s): %s", rejected.query, rejected.reason, rejected.detail
            )
        self.metrics.last_refresh.set(time.time())
        self.metrics.measured_pairs.set(len(conversion.measurements))
        self.last_success, self.last_error = now, None
        return conversion.measurements

    def _query(self, name: str, query: str, now: float) -> object:
        try:
            return self._client.custom_query(query, params={"time": f"{now:.3f}"})
        except (
            requests.RequestException,
            PrometheusApiClientException,
            ValueError,
            KeyError,
            TypeError,
        ) as error:
            self.metrics.query_failures.labels(name).inc()
            message = f"{name} query to {self.settings.url} failed: {self._explain(error)}"
            self.last_error = message
            raise LatencySourceError(message) from error

    def _explain(self, error: Exception) -> str:
        """A one-line cause; the client's own messages bury it in URL-encoded query text."""
        # Without retries, requests reports even a read timeout as a ConnectionError wrapping
        # urllib3's reason. NewConnectionError subclasses urllib3's TimeoutError, so test it first.
        reason = getattr(error.args[0], "reason", None) if error.args else None
        if isinstance(reason, urllib3_exceptions.NewConnectionError):
            return "cannot connect"
        timeout = isinstance(error, requests.Timeout) or isinstance(
            reason, urllib3_exceptions.TimeoutError
        )
        if timeout:
            return f"no answer within {self.settings.timeout_seconds}s"
        if isinstance(error, ValueError):  # includes requests' JSONDecodeError
            return "the response is not JSON"
        if isinstance(error, requests.RequestException):
            return (
                "cannot connect"
                if isinstance(error, requests.ConnectionError)
                else type(error).__name__
            )
        if isinstance(error, PrometheusApiClientException):
            status = re.search(r"HTTP Status Code (\d+)", str(error))
            return f"HTTP status {status.group(1)}" if status else _short(error)
        return "the response has no data.result"

    async def poll(
        self,
        on_update: UpdateCallback,
        *,
        known_regions: Callable[[], Collection[str] | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> NoReturn:
        """Refreshes every `interval_seconds` until cancelled; calls `on_update` after a success.

        Never raises (except CancelledError): failures of the query or the callback are counted
        and logged, and polling goes on.
        """
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            started = loop.time()
            try:
                measurements = await asyncio.to_thread(self.fetch, clock(), known_regions())
            except LatencySourceError as error:
                # Log the change to failing once, not every interval of an outage.
                (log.debug if failing else log.warning)("%s", error)
                failing = True
            except Exception:
                self.metrics.query_failures.labels("rtt").inc()
                log.exception("latency refresh from %s failed unexpectedly", self.settings.url)
                failing = True
            else:
                if failing:
                    log.info("latency refresh from %s works again", self.settings.url)
                failing = False
                await self._deliver(on_update, measurements)
            await asyncio.sleep(max(0.0, started + self.settings.interval_seconds - loop.time()))

    @staticmethod
    async def _deliver(on_update: UpdateCallback, measurements: tuple[Measurement, ...]) -> None:
        try:
            result = on_update(measurements)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("latency update callback failed; polling continues")

    def close(self) -> None:
        self._client.close()


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
