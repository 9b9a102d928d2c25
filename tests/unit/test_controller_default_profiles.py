"""Cluster-wide default ThroughputProfiles: the profiles of one designated namespace apply to a
class in every namespace that has no trusted profile of its own for it. The namespace's own
trusted profile comes first, then a trusted default, then the reference curve (or dataProfile);
the decision names where its model came from."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tests.unit.test_placement_engine_calibrated import classed, world
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.settings import add_arguments, from_args
from tsunagu.placement.engine import EngineSettings, decide
from tsunagu.placement.throughput import REFERENCE_K, curve_loss

DEFAULTS = "tsunagu-system"
INSENSITIVE = REFERENCE_K / 10  # 1.3 % at 15 ms
SENSITIVE = REFERENCE_K * 3  # 29 % at 15 ms
BASE = EngineSettings()


def profile(namespace: str, k: float, trusted: bool = True, name: str = "llm-ft") -> dict[str, Any]:
    """A profile of class llm-ft whose samples follow `k`; untrusted: all at one RTT."""
    rtts = (5.0, 10.0, 15.0, 20.0, 30.0) if trusted else (15.0,) * 5
    samples = [{"rttMs": 0, "throughput": 100.0}]
    samples += [{"rttMs": r, "throughput": 100.0 * (1 - curve_loss(k, 0, r))} for r in rtts]
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"workloadClass": "llm-ft"},
        "status": {"samples": samples, "sampleCount": len(samples)},
    }


def catalog(*profiles: dict[str, Any], default_namespace: str = DEFAULTS) -> Catalog:
    known = Catalog(default_profiles_namespace=default_namespace)
    for body in profiles:
        known.upsert_profile(body)
    return known


def model_in(known: Catalog, namespace: str = "team-a") -> tuple[str, float | None]:
    """(the model named by the decision, its predicted loss in fukuoka, 15 ms from the data)."""
    decision = decide(classed(0.5), world(False), known.engine_for(namespace, BASE))
    fukuoka = next(c for c in decision.candidates if c.region == "fukuoka")
    return decision.model, fukuoka.predicted_loss


OWN = "curve calibrated on 5 samples of class llm-ft (rms 0.0%)"
DEFAULT = (
    "curve calibrated on 5 samples of class llm-ft (rms 0.0%, cluster default in tsunagu-system)"
)


@pytest.mark.parametrize(
    ("profiles", "default_namespace", "expected", "k"),
    [
        pytest.param([], DEFAULTS, "reference curve", REFERENCE_K, id="none"),
        pytest.param([profile("team-a", SENSITIVE), profile(DEFAULTS, INSENSITIVE)], DEFAULTS,
                     OWN, SENSITIVE, id="own-trusted-wins"),
        pytest.param([profile("team-a", SENSITIVE, trusted=False), profile(DEFAULTS, INSENSITIVE)],
                     DEFAULTS, DEFAULT, INSENSITIVE, id="own-untrusted-falls-to-default"),
        pytest.param([profile(DEFAULTS, INSENSITIVE)], DEFAULTS, DEFAULT, INSENSITIVE,
                     id="default-only"),
        pytest.param([profile(DEFAULTS, INSENSITIVE, trusted=False)], DEFAULTS,
                     "reference curve", REFERENCE_K, id="default-untrusted"),
        pytest.param([profile(DEFAULTS, INSENSITIVE)], "", "reference curve", REFERENCE_K,
                     id="defaults-disabled"),
        pytest.param([profile("team-b", INSENSITIVE)], DEFAULTS, "reference curve", REFERENCE_K,
                     id="another-team-is-no-default"),
    ],
)  # fmt: skip
def test_own_trusted_then_default_trusted_then_reference(
    profiles: list[dict[str, Any]], default_namespace: str, expected: str, k: float
) -> None:
    model, loss = model_in(catalog(*profiles, default_namespace=default_namespace))
    assert model == expected
    assert loss == pytest.approx(curve_loss(k, 0, 15.0), rel=1e-3)


def test_the_placed_message_names_the_cluster_default() -> None:
    known = catalog(profile(DEFAULTS, INSENSITIVE))
    decision = decide(classed(0.05), world(False), known.engine_for("team-a", BASE))
    assert (decision.placed, decision.region) == (True, "fukuoka")
    assert decision.message.endswith(f"loss from the {DEFAULT})")


def test_in_the_default_namespace_its_profiles_are_its_own() -> None:
    assert model_in(catalog(profile(DEFAULTS, INSENSITIVE)), DEFAULTS)[0] == OWN


def test_a_default_changed_or_removed_reaches_every_namespace() -> None:
    known = catalog(profile(DEFAULTS, INSENSITIVE), profile("team-b", SENSITIVE))
    assert model_in(known, "team-a")[0] == DEFAULT
    assert model_in(known, "team-b")[0] == OWN  # cached beside team-a's
    known.upsert_profile(profile(DEFAULTS, INSENSITIVE, trusted=False))
    assert model_in(known, "team-a")[0] == "reference curve"
    known.upsert_profile(profile(DEFAULTS, INSENSITIVE))
    assert model_in(known, "team-a")[0] == DEFAULT
    known.delete_profile(DEFAULTS, "llm-ft")
    assert model_in(known, "team-a") == ("reference curve", pytest.approx(0.12, abs=1e-3))
    assert model_in(known, "team-b")[0] == OWN


def test_the_learner_keeps_to_the_namespace_own_profile() -> None:
    """profile_for (what the learner writes) never names a default: teams' data stay theirs."""
    known = catalog(profile(DEFAULTS, INSENSITIVE))
    assert known.profile_for("team-a", "llm-ft") is None
    found = known.profile_for(DEFAULTS, "llm-ft")
    assert found is not None
    assert found.namespace == DEFAULTS


def parse(
    monkeypatch: pytest.MonkeyPatch, *argv: str, env: str | None = None, pod: str | None = None
) -> str:
    """The default profiles' namespace of these flags, environment and pod namespace."""
    for name, value in (("TSUNAGU_DEFAULT_PROFILES_NAMESPACE", env), ("POD_NAMESPACE", pod)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv))).scheduling.default_profiles_namespace


def test_the_default_namespace_is_the_lease_s_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch) == "tsunagu-system"
    assert parse(monkeypatch, "--leader-elect-namespace", "ops") == "ops"
    assert parse(monkeypatch, pod="tsunagu") == "tsunagu"
    assert parse(monkeypatch, "--default-profiles-namespace", "profiles") == "profiles"
    assert parse(monkeypatch, env="profiles") == "profiles"


def test_an_empty_default_namespace_disables_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch, "--default-profiles-namespace", "") == ""
    assert parse(monkeypatch, env="") == ""
