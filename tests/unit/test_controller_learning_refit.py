"""The learner's pure parts and settings: a refit that keeps the baseline and the Trusted
condition's transition time, and the flags of the learning section."""

from __future__ import annotations

import argparse

import pytest

from tests.unit.test_controller_learning import NOW, K, truth
from tsunagu.api.profiles import ThroughputProfile, ThroughputSample, parse_throughput_profile
from tsunagu.controller.lifecycle.learning import refit
from tsunagu.controller.report.status import timestamp
from tsunagu.controller.settings import LearningSettings, add_arguments, from_args
from tsunagu.sources.throughput_prometheus import DEFAULT_QUERY


def test_the_baseline_stands_once_the_local_samples_left_the_window() -> None:
    profile = ThroughputProfile(
        "team", "llm", "llm",
        samples=tuple(ThroughputSample(6, truth(6), region="osaka", observed_at=NOW + i)
                      for i in range(64)),
        baseline=truth(0),
    )  # fmt: skip
    new = [ThroughputSample(15, truth(15), region="fukuoka", observed_at=NOW + 100)]
    learned = refit(profile, new, NOW + 101)
    assert learned is not None
    assert learned.status["baseline"] == pytest.approx(truth(0))
    assert learned.calibration.fitted is not None
    assert learned.calibration.fitted.model.k == pytest.approx(K, rel=0.01)
    assert learned.status["sampleCount"] == 64


def test_the_transition_time_is_kept_while_trust_does_not_change() -> None:
    body = {
        "metadata": {"name": "llm", "namespace": "team"},
        "spec": {"workloadClass": "llm"},
        "status": {
            "trusted": False,
            "conditions": [{"type": "Trusted", "status": "False", "reason": "RuleNotMet",
                            "message": "m", "lastTransitionTime": timestamp(NOW - 600)}],
        },
    }  # fmt: skip
    profile = parse_throughput_profile(body)
    learned = refit(profile, [ThroughputSample(0, 100.0, observed_at=NOW)], NOW)
    assert learned is not None
    assert learned.status["conditions"][0]["lastTransitionTime"] == timestamp(NOW - 600)


def test_flags_set_the_learning_section() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = from_args(parser.parse_args([])).learning
    assert defaults == LearningSettings()
    assert defaults.query.query == DEFAULT_QUERY
    settings = from_args(
        parser.parse_args(
            [
                "--throughput-interval", "5", "--throughput-query", "sum by (ns, j) (x)",
                "--throughput-namespace-label", "ns", "--throughput-job-label", "j",
                "--throughput-warmup-seconds", "10", "--throughput-create-profiles", "false",
            ]
        )
    ).learning  # fmt: skip
    assert (settings.interval_seconds, settings.warmup_seconds, settings.create_profiles) == (
        5.0, 10.0, False,
    )  # fmt: skip
    assert (settings.query.query, settings.query.namespace_label, settings.query.job_label) == (
        "sum by (ns, j) (x)", "ns", "j",
    )  # fmt: skip
    with pytest.raises(SystemExit):
        from_args(parser.parse_args(["--throughput-interval", "-1"]))
