"""Observed throughput from a Prometheus vector result, joined with running jobs."""

from __future__ import annotations

from typing import Any

import pytest

from tsunagu.api.profiles import ThroughputSample
from tsunagu.sources.throughput_prometheus import (
    DEFAULT_QUERY,
    ObservedRate,
    RejectReason,
    RunningJob,
    ThroughputQuerySettings,
    parse_vector,
    query_vector,
    samples_by_class,
)

SETTINGS = ThroughputQuerySettings()
T = 1_796_115_600.0


def series(value: Any, namespace: str | None = "team-a", job: str | None = "llm") -> Any:
    labels = {k: v for k, v in (("namespace", namespace), ("job", job)) if v is not None}
    return {"metric": labels, "value": [T, value]}


def test_good_series_become_rates() -> None:
    result = [series("812.5"), series("40", job="vit")]
    conversion = parse_vector(result, SETTINGS)
    assert conversion.rejected == ()
    assert conversion.rates == (
        ObservedRate("team-a", "llm", 812.5, T),
        ObservedRate("team-a", "vit", 40.0, T),
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(series("NaN"), RejectReason.NOT_A_NUMBER, id="gap-or-restart"),
        pytest.param(series("+Inf"), RejectReason.INFINITE, id="inf"),
        pytest.param(series("-3"), RejectReason.NEGATIVE, id="negative"),
        pytest.param(series("0"), RejectReason.ZERO, id="not-stepping"),
        pytest.param(series("1e12"), RejectReason.ABSURD, id="absurd"),
        pytest.param(series("5", job=None), RejectReason.MISSING_LABEL, id="no-job"),
        pytest.param(series("5", namespace=""), RejectReason.MISSING_LABEL, id="empty-ns"),
        pytest.param({"metric": {}, "value": [T]}, RejectReason.MALFORMED, id="short-value"),
        pytest.param({"metric": {}, "value": [T, "fast"]}, RejectReason.MALFORMED, id="text"),
        pytest.param("nonsense", RejectReason.MALFORMED, id="not-a-map"),
    ],
)
def test_garbage_is_skipped_and_counted(raw: Any, reason: RejectReason) -> None:
    conversion = parse_vector([raw, series("100", job="good")], SETTINGS)
    assert [r.key for r in conversion.rates] == [("team-a", "good")]
    assert [r.reason for r in conversion.rejected] == [reason]


def test_duplicate_series_of_one_job_are_dropped() -> None:
    conversion = parse_vector([series("1"), series("2"), series("3")], SETTINGS)
    assert conversion.rates == ()
    assert {r.reason for r in conversion.rejected} == {RejectReason.DUPLICATE_JOB}


def test_a_result_that_is_not_a_vector_is_rejected() -> None:
    conversion = parse_vector({"resultType": "matrix"}, SETTINGS)
    assert conversion.rates == ()
    assert conversion.rejected[0].reason == RejectReason.MALFORMED


def test_labels_are_configurable() -> None:
    settings = ThroughputQuerySettings(job_label="tsunagu_job")
    raw = {"metric": {"namespace": "a", "tsunagu_job": "x", "job": "kubelet"}, "value": [T, "9"]}
    assert parse_vector([raw], settings).rates == (ObservedRate("a", "x", 9.0, T),)


def test_samples_are_per_gpu_per_class_for_running_jobs_only() -> None:
    rates = (
        ObservedRate("team-a", "big", 800.0, T),
        ObservedRate("team-a", "small", 100.0, T),
        ObservedRate("team-a", "finished", 50.0, T),
    )
    running = {
        ("team-a", "big"): RunningJob("llm-ft", "fukuoka", 15.0, gpus=8),
        ("team-a", "small"): RunningJob("llm-ft", "tokyo", 0.0, gpus=1),
    }
    assert samples_by_class(rates, running) == {
        "llm-ft": [
            ThroughputSample(15.0, 100.0, region="fukuoka", observed_at=T),
            ThroughputSample(0.0, 100.0, region="tokyo", observed_at=T),
        ]
    }


def test_query_vector_sends_the_configured_query() -> None:
    class FakePrometheus:
        def __init__(self) -> None:
            self.queries: list[str] = []

        def custom_query(self, query: str) -> object:
            self.queries.append(query)
            return [series("7")]

    fake = FakePrometheus()
    conversion = query_vector(fake, SETTINGS)
    assert fake.queries == [DEFAULT_QUERY]
    assert conversion.rates[0].throughput == 7.0
