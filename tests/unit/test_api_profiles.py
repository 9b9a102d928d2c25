"""Parsing ThroughputProfile objects."""

from __future__ import annotations

from typing import Any

import pytest

from tsunagu.api.profiles import (
    ModelKind,
    ProfileModel,
    SpecError,
    ThroughputSample,
    parse_throughput_profile,
)


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
