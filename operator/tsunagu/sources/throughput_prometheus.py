"""Observed training throughput from Prometheus: a PromQL vector in, per-class samples out.

The query returns one series per TrainingJob, labelled with its namespace and name, whose value
is the job's throughput now (default: the rate of the `tsunagu_training_samples_total` counter
the training program exports, see docs/throughput.md). `parse_vector` turns the result into
`ObservedRate`s; `samples_by_class` joins them with what the controller knows of each running
job (region, RTT to its data at the time, GPUs, class) into `ThroughputSample`s per GPU, ready
for `tsunagu.placement.calibration.calibrate`. Both are pure; `query_vector` is the one HTTP call.

Bad series never stop a refresh, as in the latency source: malformed entries, missing labels,
NaN (no counter increase in the window: a gap or a restart), ±Inf, negative, zero (a job not
stepping yet, or restarting) and duplicate series are skipped and counted by reason. A counter
reset inside the window is absorbed by `rate()` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from tsunagu.api.profiles import ThroughputSample
from tsunagu.sources.promql import SampleProblem, read_instant_sample

DEFAULT_QUERY = "sum by (namespace, job) (rate(tsunagu_training_samples_total[2m]))"
# Samples per second above this are a unit mistake or a broken exporter, not a measurement.
MAX_THROUGHPUT = 1e9


@dataclass(frozen=True)
class ThroughputQuerySettings:
    query: str = DEFAULT_QUERY
    namespace_label: str = "namespace"
    job_label: str = "job"
    max_throughput: float = MAX_THROUGHPUT


class RejectReason(StrEnum):
    MALFORMED = "malformed"
    MISSING_LABEL = "missing_label"
    NOT_A_NUMBER = "not_a_number"  # no increase in the window: a gap, or a restart
    INFINITE = "infinite"
    NEGATIVE = "negative"
    ZERO = "zero"  # not stepping (starting, restarting, or stalled): says nothing about RTT
    ABSURD = "absurd"
    DUPLICATE_JOB = "duplicate_job"  # the query did not aggregate to one series per job


@dataclass(frozen=True)
class ObservedRate:
    namespace: str
    job: str
    throughput: float  # of the whole job, in the counter's unit per second
    observed_at: float  # Unix seconds of the sample

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.job)


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class RateConversion:
    rates: tuple[ObservedRate, ...]
    rejected: tuple[Rejected, ...] = field(default=())


def _check(raw: object, settings: ThroughputQuerySettings) -> ObservedRate | RejectReason:
    sample = read_instant_sample(raw, settings.namespace_label, settings.job_label)
    if isinstance(sample, SampleProblem):
        return RejectReason(sample.value)
    namespace, job, timestamp, number = sample.first, sample.second, sample.timestamp, sample.value
    if number == 0:
        return RejectReason.ZERO
    if number > settings.max_throughput:
        return RejectReason.ABSURD
    return ObservedRate(namespace, job, number, timestamp)


def parse_vector(result: object, settings: ThroughputQuerySettings) -> RateConversion:
    """The jobs' current throughput from an instant-vector result (`data.result`)."""
    if not isinstance(result, list):
        return RateConversion((), (Rejected(RejectReason.MALFORMED, f"result is {type(result)}"),))
    rates: dict[tuple[str, str], ObservedRate] = {}
    duplicates: set[tuple[str, str]] = set()
    rejected: list[Rejected] = []
    for raw in result:
        checked = _check(raw, settings)
        if isinstance(checked, RejectReason):
            labels = raw.get("metric") if isinstance(raw, Mapping) else None
            rejected.append(Rejected(checked, str(labels)))
            continue
        if checked.key in rates or checked.key in duplicates:
            duplicates.add(checked.key)
            rates.pop(checked.key, None)
            rejected.append(Rejected(RejectReason.DUPLICATE_JOB, "/".join(checked.key)))
            continue
        rates[checked.key] = checked
    ordered = tuple(rates[key] for key in sorted(rates))
    return RateConversion(ordered, tuple(rejected))


@dataclass(frozen=True)
class RunningJob:
    """What the controller knows of a running TrainingJob when its throughput is read."""

    workload_class: str
    region: str
    rtt_ms: float  # to the nearest copy of its data, as the engine uses it; 0 next to the data
    gpus: int


def samples_by_class(
    rates: tuple[ObservedRate, ...], running: Mapping[tuple[str, str], RunningJob]
) -> dict[str, list[ThroughputSample]]:
    """Per workload class, one sample per running job: throughput per GPU at its RTT.

    Per GPU, so that jobs of one class but different sizes compare; jobs that are not running
    (finished, requeued, or without a class) are left out.
    """
    by_class: dict[str, list[ThroughputSample]] = {}
    for rate in rates:
        job = running.get(rate.key)
        if job is None or job.gpus <= 0:
            continue
        by_class.setdefault(job.workload_class, []).append(
            ThroughputSample(
                rtt_ms=job.rtt_ms,
                throughput=rate.throughput / job.gpus,
                region=job.region,
                observed_at=rate.observed_at,
            )
        )
    return by_class


class InstantQuery(Protocol):
    def custom_query(self, query: str) -> object: ...


def query_vector(prometheus: InstantQuery, settings: ThroughputQuerySettings) -> RateConversion:
    """Runs the query (e.g. on a `prometheus_api_client.PrometheusConnect`) and parses it.

    Errors of the call propagate: the caller keeps the profiles it has and retries later.
    """
    return parse_vector(prometheus.custom_query(settings.query), settings)
