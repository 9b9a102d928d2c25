"""The engine with learned throughput models: a trusted fit replaces the reference curve."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.test_placement_fixtures import dataset, job, link, node, region, snapshot
from tsunagu.api.conditions import Reason
from tsunagu.api.profiles import ModelKind, ProfileModel
from tsunagu.api.types import DataProfile, TrainingJobSpec
from tsunagu.placement.engine import Decision, EngineSettings, decide
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import REFERENCE_K, FittedModel, curve_loss, reference_loss

RTT_MS = 15.0


def world(home_has_room: bool) -> ClusterSnapshot:
    """Data in tokyo (expensive); fukuoka, 15 ms away, is cheap and has room."""
    return snapshot(
        [
            region("tokyo", price=3.0, carbon=450),
            region("fukuoka", price=1.5, carbon=250, links=[link("tokyo", RTT_MS)]),
        ],
        [node("tk-1", "tokyo", 8 if home_has_room else 0), node("fk-1", "fukuoka", 8)],
        datasets=[dataset("tokyo")],
    )


def fitted(k: float, trusted: bool = True, samples: int = 7) -> dict[str, FittedModel]:
    model = ProfileModel(ModelKind.ReferenceCurve, k)
    return {"llm-ft": FittedModel("llm-ft", model, samples, 0.004, 0.7, trusted)}


def classed(max_loss: float, workload_class: str | None = "llm-ft") -> TrainingJobSpec:
    return replace(job(max_loss=max_loss), workload_class=workload_class)


def loss_in(decision: Decision, region_name: str) -> float | None:
    return next(c.predicted_loss for c in decision.candidates if c.region == region_name)


def test_insensitive_class_is_placed_where_the_reference_curve_refuses() -> None:
    spec = classed(max_loss=0.05)
    refused = decide(spec, world(home_has_room=False))
    assert not refused.placed
    assert next(c.reason for c in refused.candidates if c.region == "fukuoka") == (
        Reason.ThroughputLossBudget
    )
    assert refused.model == "reference curve"

    learned = decide(spec, world(False), EngineSettings(fitted_models=fitted(REFERENCE_K / 10)))
    assert (learned.placed, learned.region) == (True, "fukuoka")
    assert learned.predicted_loss == pytest.approx(curve_loss(REFERENCE_K / 10, 0, RTT_MS))
    assert learned.model == "curve calibrated on 7 samples of class llm-ft (rms 0.4%)"
    assert learned.model in learned.message


def test_sensitive_class_is_kept_next_to_its_data() -> None:
    spec = classed(max_loss=0.15)
    by_reference = decide(spec, world(home_has_room=True))
    assert by_reference.region == "fukuoka"  # cheaper, and 12 % fits the 15 % budget
    assert by_reference.predicted_loss == pytest.approx(reference_loss(RTT_MS))

    learned = decide(spec, world(True), EngineSettings(fitted_models=fitted(REFERENCE_K * 3)))
    assert learned.region == "tokyo"
    assert learned.predicted_loss == 0.0
    fukuoka_loss = loss_in(learned, "fukuoka")
    assert fukuoka_loss == pytest.approx(curve_loss(REFERENCE_K * 3, 0, RTT_MS))
    assert next(c.reason for c in learned.candidates if c.region == "fukuoka") == (
        Reason.ThroughputLossBudget
    )


@pytest.mark.parametrize(
    ("spec", "models", "expected_model"),
    [
        pytest.param(classed(0.05), fitted(REFERENCE_K / 10, trusted=False), "reference curve",
                     id="untrusted-fit"),
        pytest.param(classed(0.05, None), fitted(REFERENCE_K / 10), "reference curve",
                     id="job-without-class"),
        pytest.param(classed(0.05, "other"), fitted(REFERENCE_K / 10), "reference curve",
                     id="other-class"),
        pytest.param(
            replace(classed(0.05), data_profile=DataProfile(0, 1, 1, 0.1, 0)),
            fitted(REFERENCE_K / 10, trusted=False), "dataProfile", id="untrusted-keeps-profile",
        ),
    ],
)  # fmt: skip
def test_falls_back_until_trusted(
    spec: TrainingJobSpec, models: dict[str, FittedModel], expected_model: str
) -> None:
    decision = decide(spec, world(False), EngineSettings(fitted_models=models))
    assert decision.model == expected_model
    learned = curve_loss(REFERENCE_K / 10, 0, RTT_MS)
    assert loss_in(decision, "fukuoka") != pytest.approx(learned)
