"""LatencyMatrix: declared-link rules, freshness of measurements, and the RTT the model uses."""

from __future__ import annotations

import pytest

from tests.unit.test_placement_fixtures import NOW, link, region
from tsunagu.api.types import GeoPoint, RegionSpec
from tsunagu.placement.datapath import effective_rtt_ms, nearest_copy
from tsunagu.placement.latency import LatencyMatrix, LinkSource, Measurement


def measured(a: str, b: str, rtt: float, age: float, jitter: float = 0.0) -> Measurement:
    return Measurement(a, b, rtt, jitter, NOW - age, source="Prometheus")


@pytest.mark.parametrize(
    ("regions", "pair", "rtt_ms", "bandwidth_gbps"),
    [
        pytest.param(
            [region("a", links=[link("b", 10, 40)]), region("b")],
            ("a", "b"),
            10.0,
            40.0,
            id="declared-forward",
        ),
        pytest.param(
            [region("a", links=[link("b", 10, 40)]), region("b")],
            ("b", "a"),
            10.0,
            40.0,
            id="declared-holds-both-ways",
        ),
        pytest.param(
            [region("a", links=[link("b", 10, 40)]), region("b", links=[link("a", 14, 100)])],
            ("a", "b"),
            14.0,
            40.0,
            id="both-sides-larger-rtt-narrower-pipe",
        ),
        pytest.param(
            [region("a", links=[link("b", 14)]), region("b", links=[link("a", 10)])],
            ("b", "a"),
            14.0,
            None,
            id="both-sides-either-direction",
        ),
        pytest.param(
            [region("a", links=[link("tokyo", 7)])],
            ("tokyo", "a"),
            7.0,
            None,
            id="link-to-region-not-listed",
        ),
    ],
)
def test_declared_links(
    regions: list[RegionSpec],
    pair: tuple[str, str],
    rtt_ms: float,
    bandwidth_gbps: float | None,
) -> None:
    estimate = LatencyMatrix.build(regions).link(*pair, NOW)
    assert estimate is not None
    assert estimate.rtt_ms == rtt_ms
    assert estimate.bandwidth_gbps == bandwidth_gbps
    assert estimate.source == LinkSource.Declared
    assert estimate.observed_at is None


def test_same_region_is_local_zero() -> None:
    estimate = LatencyMatrix.build([region("a")]).link("a", "a", NOW)
    assert estimate is not None
    assert (estimate.rtt_ms, estimate.source) == (0.0, LinkSource.Local)


def test_unknown_pair() -> None:
    assert LatencyMatrix.build([region("a"), region("b")]).link("a", "b", NOW) is None


@pytest.mark.parametrize(
    ("measurements", "staleness", "expected_rtt", "expected_source"),
    [
        pytest.param([measured("a", "b", 3, age=10)], 120, 3.0, "Prometheus", id="fresh-wins"),
        pytest.param(
            [measured("a", "b", 3, age=120)], 120, 3.0, "Prometheus", id="exactly-at-staleness"
        ),
        pytest.param(
            [measured("b", "a", 4, age=10)], 120, 4.0, "Prometheus", id="reverse-direction"
        ),
        pytest.param(
            [measured("a", "b", 3, age=60), measured("a", "b", 5, age=20)],
            120,
            5.0,
            "Prometheus",
            id="latest-measurement",
        ),
        pytest.param(
            [measured("a", "b", 5, age=20), measured("a", "b", 3, age=60)],
            120,
            5.0,
            "Prometheus",
            id="latest-whatever-the-order",
        ),
        pytest.param(
            [measured("a", "b", 3, age=200)], 300, 3.0, "Prometheus", id="longer-staleness"
        ),
        pytest.param(
            [measured("a", "b", 6, age=20), measured("a", "b", 4, age=20)],
            120,
            6.0,
            "Prometheus",
            id="same-instant-larger-rtt",
        ),
    ],
)
def test_measurements_and_staleness(
    measurements: list[Measurement],
    staleness: float,
    expected_rtt: float,
    expected_source: str,
) -> None:
    regions = [region("a", links=[link("b", 10, 40)]), region("b")]
    estimate = LatencyMatrix.build(regions, measurements, staleness).link("a", "b", NOW)
    assert estimate is not None
    assert (estimate.rtt_ms, estimate.source) == (expected_rtt, expected_source)
    # Bandwidth is only ever declared, so a measured link keeps the declared figure.
    assert estimate.bandwidth_gbps == 40.0


def test_a_stale_measurement_makes_the_pair_unknown_not_its_declared_link() -> None:
    regions = [region("a", links=[link("b", 10, 40)]), region("b")]
    stale = [measured("a", "b", 3, age=121)]
    assert LatencyMatrix.build(regions, stale, 120).link("a", "b", NOW) is None
    assert (
        LatencyMatrix.build(regions, [measured("b", "a", 3, age=121)], 120).link("a", "b", NOW)
        is None
    )


def test_the_declared_fallback_when_allowed_replaces_a_stale_measurement() -> None:
    regions = [region("a", links=[link("b", 10, 40)]), region("b")]
    stale = [measured("a", "b", 3, age=121)]
    estimate = LatencyMatrix.build(regions, stale, 120, declared_fallback=True).link("a", "b", NOW)
    assert estimate is not None
    assert (estimate.rtt_ms, estimate.source) == (10.0, "Declared")


def test_a_pair_never_measured_takes_its_declared_link_either_way() -> None:
    regions = [region("a", links=[link("b", 10, 40)]), region("b")]
    for fallback in (False, True):
        estimate = LatencyMatrix.build(regions, [], 120, declared_fallback=fallback).link(
            "a", "b", NOW
        )
        assert estimate is not None
        assert (estimate.rtt_ms, estimate.source) == (10.0, "Declared")


def test_stale_measurement_without_declaration_is_unknown() -> None:
    matrix = LatencyMatrix.build([region("a"), region("b")], [measured("a", "b", 3, age=500)])
    assert matrix.link("a", "b", NOW) is None
    assert matrix.measured_pairs() == (("a", "b"),)


def test_measured_jitter_is_kept() -> None:
    matrix = LatencyMatrix.build([], [measured("a", "b", 10, age=1, jitter=2)])
    estimate = matrix.link("a", "b", NOW)
    assert estimate is not None
    assert (estimate.rtt_ms, estimate.jitter_ms, estimate.rtt_with_jitter_ms) == (10, 2, 12)
    assert estimate.observed_at == NOW - 1


TOKYO = GeoPoint(35.6812, 139.7671)
FUKUOKA = GeoPoint(33.5902, 130.4017)


@pytest.mark.parametrize(
    ("regions", "measurements", "expected"),
    [
        pytest.param([region("fk", links=[link("tk", 15)]), region("tk")], [], 15.0, id="declared"),
        pytest.param(
            [region("fk"), region("tk")],
            [Measurement("fk", "tk", 10, 2, NOW)],
            12.0,
            id="rtt-plus-jitter",
        ),
        pytest.param(
            [
                region("fk", links=[link("tk", 1)], location=FUKUOKA),
                region("tk", location=TOKYO),
            ],
            [],
            pytest.approx(8.8, abs=0.2),
            id="fibre-floor-raises-impossible-rtt",
        ),
        pytest.param(
            [region("fk", links=[link("tk", 1)], location=FUKUOKA), region("tk")],
            [],
            1.0,
            id="no-floor-without-both-locations",
        ),
        pytest.param(
            [
                region("fk", links=[link("tk", 15)], location=FUKUOKA),
                region("tk", location=TOKYO),
            ],
            [],
            15.0,
            id="floor-below-measured-changes-nothing",
        ),
    ],
)
def test_effective_rtt(
    regions: list[RegionSpec], measurements: list[Measurement], expected: object
) -> None:
    matrix = LatencyMatrix.build(regions, measurements)
    assert effective_rtt_ms(matrix, "fk", "tk", NOW) == expected


def test_nearest_copy_prefers_smallest_rtt_then_name() -> None:
    matrix = LatencyMatrix.build(
        [region("a", links=[link("b", 9), link("c", 4), link("d", 4)]), region("b")]
    )
    path = nearest_copy(matrix, "a", ["b", "d", "c"], NOW)
    assert path is not None
    assert (path.site, path.rtt_ms) == ("c", 4.0)
    local = nearest_copy(matrix, "a", ["b", "a"], NOW)
    assert local is not None
    assert (local.site, local.rtt_ms, local.local) == ("a", 0.0, True)
    assert nearest_copy(matrix, "b", ["c"], NOW) is None
