"""The throughput model, the fibre floor and residency rules, against hand-computed values."""

from __future__ import annotations

import itertools

import pytest

from tests.unit.test_placement_fixtures import dataset
from tsunagu.api.types import DataProfile, GeoPoint, ResidencyMode
from tsunagu.placement.residency import data_sites, residency_allows
from tsunagu.placement.throughput import (
    data_stall_loss,
    fibre_floor_ms,
    great_circle_km,
    reference_loss,
    slowdown,
)

TOKYO = GeoPoint(35.6812, 139.7671)
FUKUOKA = GeoPoint(33.5902, 130.4017)


def test_reference_loss_is_zero_at_zero() -> None:
    assert reference_loss(0.0) == 0.0


def test_reference_loss_matches_pre_test_at_15_ms() -> None:
    assert reference_loss(15.0) == pytest.approx(0.12, abs=0.001)


def test_reference_loss_is_monotone_and_sublinear() -> None:
    values = [reference_loss(rtt / 4) for rtt in range(0, 400)]
    assert all(a < b for a, b in itertools.pairwise(values))
    assert reference_loss(30.0) < 2 * reference_loss(15.0)
    assert reference_loss(10_000.0) < 1.0


@pytest.mark.parametrize(
    ("profile", "rtt_ms", "bandwidth_gbps", "expected"),
    [
        pytest.param(
            DataProfile(0, 4, 2, 0.1, 0),
            10.0,
            None,
            0.02 / 0.12,
            id="two-round-trips-no-prefetch",
        ),
        pytest.param(
            DataProfile(0, 5, 2, 0.1, 0),
            10.0,
            None,
            0.03 / 0.13,
            id="round-trips-round-up",
        ),
        pytest.param(DataProfile(0, 4, 2, 0.1, 1), 10.0, None, 0.0, id="prefetch-hides-all"),
        pytest.param(
            DataProfile(125_000_000, 1, 1, 0.2, 0),
            10.0,
            10.0,
            0.11 / 0.31,
            id="one-gigabit-over-10-gbps",
        ),
        pytest.param(
            DataProfile(125_000_000, 1, 1, 0.05, 1),
            10.0,
            10.0,
            0.06 / 0.11,
            id="prefetch-hides-part",
        ),
        pytest.param(
            DataProfile(125_000_000, 1, 1, 0.2, 0),
            10.0,
            None,
            0.01 / 0.21,
            id="unlimited-bandwidth-ignores-bytes",
        ),
        pytest.param(DataProfile(10**9, 8, 1, 0.5, 0), 0.0, None, 0.0, id="local-read"),
    ],
)
def test_data_stall_loss(
    profile: DataProfile, rtt_ms: float, bandwidth_gbps: float | None, expected: float
) -> None:
    assert data_stall_loss(profile, rtt_ms, bandwidth_gbps) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        pytest.param(0.0, 1.0, id="no-loss"),
        pytest.param(0.5, 2.0, id="half"),
        pytest.param(0.12, 1 / 0.88, id="pre-test"),
    ],
)
def test_slowdown(loss: float, expected: float) -> None:
    assert slowdown(loss) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("a", "b", "low_ms", "high_ms"),
    [
        pytest.param(TOKYO, FUKUOKA, 8.6, 8.9, id="tokyo-fukuoka-880km"),
        pytest.param(TOKYO, TOKYO, 0.0, 0.0, id="same-place"),
        pytest.param(GeoPoint(0, 0), GeoPoint(0, 180), 200.0, 200.3, id="antipodes"),
    ],
)
def test_fibre_floor(a: GeoPoint, b: GeoPoint, low_ms: float, high_ms: float) -> None:
    floor = fibre_floor_ms(a, b)
    assert low_ms <= floor <= high_ms
    assert floor == pytest.approx(great_circle_km(a, b) / 100)


@pytest.mark.parametrize(
    ("mode", "rules", "region", "allowed"),
    [
        pytest.param(ResidencyMode.Pinned, {}, "tokyo", True, id="pinned-home"),
        pytest.param(ResidencyMode.Pinned, {}, "osaka", False, id="pinned-elsewhere"),
        pytest.param(ResidencyMode.RemoteAccess, {}, "osaka", True, id="remote-any"),
        pytest.param(
            ResidencyMode.RemoteAccess, {"allowed": ["osaka"]}, "osaka", True, id="remote-allowed"
        ),
        pytest.param(
            ResidencyMode.RemoteAccess,
            {"allowed": ["osaka"]},
            "fukuoka",
            False,
            id="remote-not-in-allowed",
        ),
        pytest.param(
            ResidencyMode.RemoteAccess,
            {"allowed": ["osaka"]},
            "tokyo",
            True,
            id="remote-home-always",
        ),
        pytest.param(
            ResidencyMode.RemoteAccess, {"denied": ["osaka"]}, "osaka", False, id="remote-denied"
        ),
        pytest.param(
            ResidencyMode.RemoteAccess,
            {"denied": ["osaka"]},
            "fukuoka",
            True,
            id="remote-not-denied",
        ),
        pytest.param(
            ResidencyMode.Replicated, {"replicas": ["osaka"]}, "osaka", True, id="replica"
        ),
        pytest.param(
            ResidencyMode.Replicated, {"replicas": ["osaka"]}, "tokyo", True, id="replicated-home"
        ),
        pytest.param(
            ResidencyMode.Replicated,
            {"replicas": ["osaka"]},
            "fukuoka",
            False,
            id="replicated-elsewhere",
        ),
    ],
)
def test_residency(
    mode: ResidencyMode, rules: dict[str, list[str]], region: str, allowed: bool
) -> None:
    assert residency_allows(dataset("tokyo", mode, **rules), region) is allowed


@pytest.mark.parametrize(
    ("mode", "replicas", "sites"),
    [
        pytest.param(ResidencyMode.Pinned, (), ("tokyo",), id="pinned"),
        pytest.param(ResidencyMode.RemoteAccess, (), ("tokyo",), id="remote"),
        pytest.param(
            ResidencyMode.Replicated, ("sapporo", "osaka"), ("osaka", "sapporo", "tokyo"), id="rep"
        ),
    ],
)
def test_data_sites(mode: ResidencyMode, replicas: tuple[str, ...], sites: tuple[str, ...]) -> None:
    assert data_sites(dataset("tokyo", mode, replicas=replicas)) == sites
