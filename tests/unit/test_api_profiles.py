"""Parsing ThroughputProfile objects."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit import test_crd_schema as crd_rules
from tsunagu.api.parse import parse_training_job
from tsunagu.api.profiles import (
    MAX_PROFILE_SAMPLES,
    ModelKind,
    ProfileModel,
    SpecError,
    ThroughputSample,
    merge_samples,
    parse_throughput_profile,
    status_of,
)

CRD = "throughputprofiles.tsunagu.io.yaml"


def _profile(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "ThroughputProfile",
        "metadata": {"name": "llm-ft", "namespace": "team-a"},
        "spec": {"workloadClass": "llm-ft"},
        "status": status,
    }


def test_full_status_parses() -> None:
    profile = parse_throughput_profile(
        _profile(
            samples=[
                {
                    "region": "fukuoka",
                    "rttMs": 15,
                    "throughput": 88.5,
                    "observedAt": "2026-12-01T09:00:00Z",
                },
                {"rttMs": 0, "throughput": 100, "baseline": 100},
            ],
            baseline=100,
            model={"kind": "DataStall", "k": 0.02, "hiddenRttMs": 6},
            confidence=0.7,
            trusted=True,
            fittedAt="2026-12-01T09:05:00Z",
        )
    )
    assert profile.key == ("team-a", "llm-ft")
    assert profile.workload_class == "llm-ft"
    assert profile.samples[0] == ThroughputSample(15.0, 88.5, None, "fukuoka", 1796115600.0)
    assert profile.samples[1].baseline == 100.0
    assert profile.model == ProfileModel(ModelKind.DataStall, 0.02, 6.0)
    assert profile.trusted
    assert profile.fitted_at == 1796115900.0


def test_a_new_profile_has_no_status() -> None:
    obj = _profile()
    del obj["status"]
    profile = parse_throughput_profile(obj)
    assert (profile.samples, profile.model, profile.trusted) == ((), None, False)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"spec": {}}, "spec.workloadClass: is required"),
        ({"status": {"samples": [{"rttMs": -1, "throughput": 1}]}}, "status.samples[0].rttMs"),
        ({"status": {"samples": [{"rttMs": 1}]}}, "status.samples[0].throughput: is required"),
        ({"status": {"model": {"kind": "Linear", "k": 1}}}, "status.model.kind"),
        ({"status": {"model": {"k": 1, "hiddenRttMs": 3}}}, "status.model.hiddenRttMs"),
        ({"status": {"confidence": 2}}, "status.confidence"),
        ({"status": {"samples": [{"rttMs": 1, "throughput": 1}] * 65}}, "status.samples"),
        ({"kind": "TrainingJob"}, "kind: must be ThroughputProfile"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    obj = _profile()
    obj.update(change)
    with pytest.raises(SpecError, match=r"^ThroughputProfile team-a/llm-ft: ") as raised:
        parse_throughput_profile(obj)
    assert field in str(raised.value)


def test_merge_keeps_the_most_recent_samples_oldest_first() -> None:
    old = tuple(ThroughputSample(1.0, 10.0, observed_at=float(t)) for t in range(60))
    new = [ThroughputSample(2.0, 20.0, observed_at=float(t)) for t in (100, 61, 62, 63, 64, 65)]
    merged = merge_samples(old, new)
    assert len(merged) == MAX_PROFILE_SAMPLES
    times = [s.observed_at for s in merged]
    assert times == sorted(times)
    assert times[-1] == 100.0
    assert times[0] == 2.0  # 66 samples in all: the two oldest are dropped


def test_status_fits_the_crd_and_parses_back() -> None:
    samples = tuple(
        ThroughputSample(rtt, 100.0 - rtt, region="fukuoka", observed_at=1796115600.0 + rtt)
        for rtt in (0.0, 5.0, 15.0)
    )
    model = ProfileModel(ModelKind.DataStall, 0.012, 4.5)
    status = status_of(
        samples, 100.0, model, 0.004, 0.4, False, 1796115900.0, ("3 usable samples (needs 5)",)
    )
    document = {**_profile(), "status": status}
    assert crd_rules.schema_errors(crd_rules.root_schema(crd_rules.load_crd(CRD)), document) == []
    parsed = parse_throughput_profile(document)
    assert parsed.samples == samples
    assert parsed.model == model
    assert parsed.baseline == 100.0
    assert not parsed.trusted
    assert status["conditions"] == [
        {
            "type": "Trusted",
            "status": "False",
            "reason": "RuleNotMet",
            "message": "3 usable samples (needs 5)",
            "lastTransitionTime": "2026-12-01T09:05:00Z",
        }
    ]


def test_training_job_workload_class_is_parsed() -> None:
    job = {
        "kind": "TrainingJob",
        "metadata": {"name": "j", "namespace": "team-a"},
        "spec": {"workloadClass": "llm-ft", "template": {}},
    }
    assert parse_training_job(job).workload_class == "llm-ft"
    del job["spec"]["workloadClass"]
    assert parse_training_job(job).workload_class is None


def test_the_trusted_condition_time_and_the_uid_are_read() -> None:
    profile = parse_throughput_profile(
        {
            "metadata": {"name": "llm", "namespace": "team", "uid": "u-1"},
            "spec": {"workloadClass": "llm"},
            "status": {
                "conditions": [
                    {"type": "Other", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                    {"type": "Trusted", "status": "True", "reason": "RuleHolds",
                     "lastTransitionTime": "2026-12-01T09:10:05Z"},
                ]
            },
        }
    )  # fmt: skip
    assert profile.uid == "u-1"
    assert profile.trusted_since == datetime(2026, 12, 1, 9, 10, 5, tzinfo=UTC).timestamp()
