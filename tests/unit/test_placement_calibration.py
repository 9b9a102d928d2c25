"""Fitting a class's sensitivity to RTT from observed throughput, and when to trust the fit."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsunagu.api.profiles import ModelKind, ProfileModel, ThroughputProfile, ThroughputSample
from tsunagu.api.types import DataProfile
from tsunagu.placement.calibration import TrustRule, calibrate, confidence_of, fitted_models
from tsunagu.placement.throughput import (
    REFERENCE_K,
    FittedModel,
    choose_model,
    curve_loss,
    data_stall_loss,
    reference_loss,
    stall_parameters,
)

RTTS = (2.0, 5.0, 10.0, 15.0, 20.0, 40.0)
BASELINE = 250.0


def _samples(
    k: float,
    hidden: float,
    seed: int,
    noise: float = 0.01,
    rtts: tuple[float, ...] = RTTS,
    per_rtt: int = 3,
    local: int = 3,
) -> list[ThroughputSample]:
    """Throughput on a known curve with multiplicative Gaussian noise, fixed seed."""
    rng = random.Random(seed)
    samples = [ThroughputSample(0.0, BASELINE * (1 + rng.gauss(0, noise))) for _ in range(local)]
    for rtt in rtts:
        for _ in range(per_rtt):
            clean = BASELINE * (1 - curve_loss(k, hidden, rtt))
            samples.append(ThroughputSample(rtt, clean * (1 + rng.gauss(0, noise))))
    return samples


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    # An insensitive class loses ~3 % at 15 ms: 1 % noise on throughput is a larger share of it.
    ("k", "k_tolerance"),
    [(REFERENCE_K / 5, 0.3), (REFERENCE_K, 0.15), (REFERENCE_K * 3, 0.1)],
)
def test_fit_recovers_k_of_a_reference_shaped_curve(
    k: float, k_tolerance: float, seed: int
) -> None:
    result = calibrate(_samples(k, 0.0, seed), workload_class="c")
    assert result.fitted is not None
    assert result.fitted.model.kind == ModelKind.ReferenceCurve
    assert result.fitted.model.k == pytest.approx(k, rel=k_tolerance)
    # What matters for placement: the predicted loss at the RTTs seen is right to ~1 point.
    for rtt in RTTS[:-1]:
        assert result.fitted.loss(rtt) == pytest.approx(curve_loss(k, 0.0, rtt), abs=0.01)
    assert result.trusted


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_recovers_a_data_stall_profile(seed: int) -> None:
    # 4 requests per step, 2 in flight, 40 ms of compute, prefetch 1 step, 1 MB over 10 Gbps.
    profile = DataProfile(1_000_000, 4, 2, 0.040, 1)
    k, hidden = stall_parameters(profile, 10.0)
    samples = [
        ThroughputSample(
            rtt,
            BASELINE
            * (1 - data_stall_loss(profile, rtt, 10.0))
            * (1 + random.Random(seed + i).gauss(0, 0.005)),
        )
        for i, rtt in enumerate([0.0, 0.0, *[r for r in RTTS for _ in range(3)]])
    ]
    result = calibrate(samples)
    assert result.fitted is not None
    assert result.fitted.model.kind == ModelKind.DataStall
    assert result.fitted.model.k == pytest.approx(k, rel=0.1)
    assert result.fitted.model.hidden_rtt_ms == pytest.approx(hidden, abs=1.5)
    assert result.trusted


def test_stall_parameters_reproduce_the_data_stall_model() -> None:
    profile = DataProfile(2_000_000, 8, 4, 0.050, 2)
    k, hidden = stall_parameters(profile, 25.0)
    for rtt in (0.0, 10.0, 49.0, 51.0, 80.0, 200.0):
        assert curve_loss(k, hidden, rtt) == pytest.approx(data_stall_loss(profile, rtt, 25.0))


def test_reference_shaped_data_prefers_the_simpler_model() -> None:
    result = calibrate(_samples(REFERENCE_K * 2, 0.0, seed=7))
    assert result.fitted is not None
    assert result.fitted.model.kind == ModelKind.ReferenceCurve


@pytest.mark.parametrize(
    ("samples", "baseline", "expected_reason"),
    [
        pytest.param(
            [ThroughputSample(r, 200.0) for r in (5.0, 10.0, 15.0)],
            None,
            "no baseline next to the data",
            id="no-baseline",
        ),
        pytest.param(
            [ThroughputSample(15.0, 220.0) for _ in range(5)],
            BASELINE,
            "samples at 1 distinct RTTs (needs 2)",
            id="one-rtt",
        ),
        pytest.param(
            [ThroughputSample(10.0, 230.0), ThroughputSample(15.0, 220.0)],
            BASELINE,
            "2 usable samples away from the data (needs 5)",
            id="too-few",
        ),
        pytest.param(
            [
                ThroughputSample(r, v)
                for r, v in ((5, 120.0), (10, 245.0), (15, 130.0), (20, 240.0))
            ],
            BASELINE,
            "RMS error",
            id="noisy",
        ),
    ],
)
def test_trust_rule_refuses(
    samples: list[ThroughputSample], baseline: float | None, expected_reason: str
) -> None:
    result = calibrate(samples, baseline)
    assert not result.trusted
    assert any(reason.startswith(expected_reason) for reason in result.untrusted_because), (
        result.untrusted_because
    )


def test_trust_rule_accepts_the_minimum() -> None:
    k = REFERENCE_K * 2
    rtts = (10, 15, 15, 15, 15)
    samples = [ThroughputSample(r, BASELINE * (1 - curve_loss(k, 0, r))) for r in rtts]
    result = calibrate(samples, BASELINE)
    assert result.trusted
    assert result.untrusted_because == ()
    stricter = calibrate(samples, BASELINE, rule=TrustRule(min_samples=6))
    assert not stricter.trusted


def test_per_row_baseline_replaces_the_profile_baseline() -> None:
    k = REFERENCE_K
    samples = [
        ThroughputSample(r, b * (1 - curve_loss(k, 0, r)), baseline=b)
        for r, b in ((5.0, 100.0), (10.0, 400.0), (15.0, 50.0), (20.0, 100.0), (30.0, 70.0))
    ]
    result = calibrate(samples)
    assert result.baseline_source == "samples"
    assert result.fitted is not None
    assert result.fitted.model.k == pytest.approx(k, rel=1e-3)
    assert result.trusted


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (ThroughputSample(math.nan, 100.0), "rttMs"),
        (ThroughputSample(-3.0, 100.0), "rttMs"),
        (ThroughputSample(10.0, math.nan), "throughput"),
        (ThroughputSample(10.0, math.inf), "throughput"),
        (ThroughputSample(10.0, 0.0), "throughput"),
        (ThroughputSample(10.0, -5.0), "throughput"),
        (ThroughputSample(10.0, BASELINE * 1.6), "over 1.5×"),
    ],
)
def test_bad_samples_are_ignored_and_named(bad: ThroughputSample, reason: str) -> None:
    good = _samples(REFERENCE_K, 0.0, seed=4)
    clean = calibrate(good, BASELINE)
    dirty = calibrate([*good[:4], bad, *good[4:]], BASELINE)
    assert [(e.index, reason in e.reason) for e in dirty.ignored] == [(4, True)]
    assert dirty.fitted == clean.fitted


def test_no_usable_sample_fits_nothing() -> None:
    result = calibrate([ThroughputSample(0.0, 100.0), ThroughputSample(10.0, math.nan)])
    assert result.fitted is None
    assert not result.trusted
    assert result.baseline == 100.0


def test_confidence_grows_with_samples_and_spread_and_falls_with_error() -> None:
    rule = TrustRule()
    assert confidence_of(10, 20, 0.005, rule) > confidence_of(3, 20, 0.005, rule)
    assert confidence_of(10, 20, 0.005, rule) > confidence_of(10, 2, 0.005, rule)
    assert confidence_of(10, 20, 0.005, rule) > confidence_of(10, 20, 0.03, rule)
    assert confidence_of(10, 20, 0.04, rule) == 0.0
    assert 0 < confidence_of(1000, 1000, 0.0, rule) <= 1


@settings(max_examples=30, deadline=None)
@given(
    k=st.floats(min_value=REFERENCE_K / 10, max_value=REFERENCE_K * 10),
    hidden=st.sampled_from([0.0, 3.0, 8.0]),
)
def test_noise_free_samples_fit_exactly(k: float, hidden: float) -> None:
    samples = [ThroughputSample(r, BASELINE * (1 - curve_loss(k, hidden, r))) for r in RTTS]
    result = calibrate(samples, BASELINE)
    assert result.fitted is not None
    assert result.fitted.rms_error < 2e-3
    for rtt in RTTS:
        assert result.fitted.loss(rtt) == pytest.approx(curve_loss(k, hidden, rtt), abs=3e-3)


def test_reference_curve_is_the_fit_of_reference_data() -> None:
    samples = [ThroughputSample(r, BASELINE * (1 - reference_loss(r))) for r in RTTS]
    result = calibrate(samples, BASELINE)
    assert result.fitted is not None
    assert result.fitted.model.k == pytest.approx(REFERENCE_K, rel=1e-3)


def _fitted(trusted: bool) -> FittedModel:
    return FittedModel(
        "llm-ft", ProfileModel(ModelKind.ReferenceCurve, REFERENCE_K * 4), 7, 0.01, 0.8, trusted
    )


PROFILE = DataProfile(1_000_000, 4, 2, 0.040, 1)


@pytest.mark.parametrize(
    ("profile", "workload_class", "fitted", "expected"),
    [
        pytest.param(None, None, {}, "reference curve", id="nothing-known"),
        pytest.param(None, "llm-ft", {}, "reference curve", id="class-without-profile"),
        pytest.param(None, "llm-ft", {"llm-ft": _fitted(False)}, "reference curve", id="untrusted"),
        pytest.param(
            PROFILE, "llm-ft", {"llm-ft": _fitted(False)}, "dataProfile", id="untrusted-profile"
        ),
        pytest.param(None, "other", {"llm-ft": _fitted(True)}, "reference curve", id="other-class"),
        pytest.param(
            PROFILE,
            "llm-ft",
            {"llm-ft": _fitted(True)},
            "curve calibrated on 7 samples of class llm-ft (rms 1.0%)",
            id="trusted-wins",
        ),
    ],
)
def test_model_choice_falls_back_until_trusted(
    profile: DataProfile | None,
    workload_class: str | None,
    fitted: dict[str, FittedModel],
    expected: str,
) -> None:
    model = choose_model(profile, workload_class, fitted)
    assert model.description == expected
    loss = model.loss(15.0, 10.0, local=False)
    if expected == "reference curve":
        assert loss == reference_loss(15.0)
    elif expected == "dataProfile":
        assert loss == data_stall_loss(PROFILE, 15.0, 10.0)
    else:
        assert loss == curve_loss(REFERENCE_K * 4, 0.0, 15.0)
    assert model.loss(15.0, 10.0, local=True) == 0.0


def test_fitted_models_refit_each_profile_from_its_samples() -> None:
    k = REFERENCE_K * 2
    good = ThroughputProfile(
        "team-a",
        "llm-ft",
        "llm-ft",
        samples=tuple(ThroughputSample(r, BASELINE * (1 - curve_loss(k, 0, r))) for r in RTTS),
        baseline=BASELINE,
        # What status claims is not what the engine acts on: the samples are.
        model=ProfileModel(ModelKind.ReferenceCurve, 1.0),
        trusted=False,
    )
    empty = ThroughputProfile("team-a", "vit", "vit")
    models = fitted_models([good, empty])
    assert set(models) == {"llm-ft"}
    assert models["llm-ft"].trusted
    assert models["llm-ft"].model.k == pytest.approx(k, rel=1e-3)
