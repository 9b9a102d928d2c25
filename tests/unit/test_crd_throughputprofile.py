"""Static checks of the ThroughputProfile CRD and of TrainingJob's workloadClass.

The same rules as tests/unit/test_crd_schema.py (bounded, described, structural), applied to
the ThroughputProfile CRD, plus its own names, printer columns and examples.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.unit import test_crd_schema as crd_rules
from tsunagu.api.profiles import parse_throughput_profile

FILE = "throughputprofiles.tsunagu.io.yaml"
PROFILE = crd_rules.ExpectedKind(
    FILE,
    "ThroughputProfile",
    "throughputprofiles",
    "Namespaced",
    "tprof",
    ("Class", "Trusted", "K", "Samples", "Age"),
)

EXAMPLE = yaml.safe_load(
    """
apiVersion: tsunagu.io/v1alpha1
kind: ThroughputProfile
metadata: {name: llm-ft, namespace: team-a}
spec: {workloadClass: llm-ft}
status:
  samples:
    - {region: tokyo, rttMs: 0, throughput: 812.0, observedAt: "2026-12-01T09:00:00Z"}
    - {region: hokkaido, rttMs: 14.3, throughput: 771.5, observedAt: "2026-12-01T09:10:00Z"}
    - {region: fukuoka, rttMs: 15.0, throughput: 768.2, baseline: 810.0}
  sampleCount: 3
  baseline: 812.0
  model: {kind: DataStall, k: 0.0121, hiddenRttMs: 9.5}
  rmsError: 0.004
  confidence: 0.41
  trusted: true
  fittedAt: "2026-12-01T09:10:05Z"
  conditions:
    - type: Trusted
      status: "True"
      reason: RuleHolds
      message: 5 samples at 3 RTTs, RMS error 0.4 points
      lastTransitionTime: "2026-12-01T09:10:05Z"
"""
)


def _schema() -> Any:
    return crd_rules.root_schema(crd_rules.load_crd(FILE))


@pytest.mark.parametrize("violates", crd_rules.SCHEMA_RULES)
def test_every_field_follows_the_schema_rule(violates: Any) -> None:
    crd = crd_rules.load_crd(FILE)
    offenders = [path for path, node in crd_rules.field_nodes(crd) if violates(path, node)]
    assert offenders == [], f"{violates.__name__}: {offenders}"


def test_names_scope_version_and_printer_columns() -> None:
    crd_rules.test_names_scope_and_version(PROFILE)
    crd_rules.test_short_names_do_not_shadow_built_in_kinds(PROFILE)
    crd_rules.test_printer_columns_point_at_fields_of_the_schema(PROFILE)
    crd_rules.test_every_cel_rule_explains_itself_and_names_a_real_field(PROFILE)


def test_the_example_fits_the_schema_and_the_parser() -> None:
    assert crd_rules.schema_errors(_schema(), EXAMPLE) == []
    profile = parse_throughput_profile(EXAMPLE)
    assert profile.trusted
    assert len(profile.samples) == EXAMPLE["status"]["sampleCount"]


@pytest.mark.parametrize(
    ("change", "expected_error"),
    [
        ({"spec": {}}, ".spec.workloadClass: required"),
        ({"spec": {"workloadClass": "LLM FT"}}, ".spec.workloadClass: 'LLM FT' does not match"),
        ({"status": {"model": {"kind": "Linear", "k": 1}}}, ".status.model.kind: 'Linear' not in"),
        ({"status": {"samples": [{"rttMs": 1}]}}, ".status.samples[0].throughput: required"),
        ({"status": {"samples": [{"rttMs": 1, "throughput": 1}] * 65}}, ".status.samples: 65"),
        ({"status": {"confidence": 1.5}}, ".status.confidence: 1.5 out of bounds"),
        ({"status": {"sampels": []}}, ".status.sampels: unknown field"),
    ],
)
def test_the_schema_rejects(change: dict[str, Any], expected_error: str) -> None:
    document = {**EXAMPLE, **change}
    errors = crd_rules.schema_errors(_schema(), document)
    assert any(error.startswith(expected_error) for error in errors), errors


def test_training_job_accepts_a_workload_class() -> None:
    schema = crd_rules.schema_for_kind("TrainingJob")
    spec = schema["properties"]["spec"]["properties"]
    assert spec["workloadClass"]["maxLength"] == 63
    job = {
        "spec": {"workloadClass": "llm-ft", "template": {"spec": {"containers": [{}]}}},
    }
    assert crd_rules.schema_errors(schema, job) == []
