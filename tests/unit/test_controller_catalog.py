"""The catalog's latency: a pair the source stops reporting keeps its last measurement, which goes
stale and makes the pair unknown, instead of letting the declared link stand in silently; the
matrix is rebuilt only when something changed."""

from __future__ import annotations

from typing import Any

from tsunagu.controller.catalog import Catalog
from tsunagu.placement.latency import Measurement

NOW = 1_000_000.0


def region(name: str, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": name},
        "spec": {"prefecture": "JP-13", "links": links or []},
    }


def catalog(**settings: Any) -> Catalog:
    result = Catalog(staleness_seconds=120, **settings)
    result.upsert_region(region("tokyo"))
    result.upsert_region(region("fukuoka", [{"to": "tokyo", "rttMs": 12}]))
    return result


def test_a_pair_dropped_by_the_source_goes_stale_instead_of_falling_back() -> None:
    known = catalog()
    known.take_measurements([Measurement("fukuoka", "tokyo", 17.0, 1.0, NOW, "Prometheus")])
    link = known.latency().link("fukuoka", "tokyo", NOW + 10)
    assert link is not None
    assert (link.rtt_ms, link.source) == (17.0, "Prometheus")
    known.take_measurements([])  # the probe is gone: the query no longer returns the pair
    assert known.latency().link("fukuoka", "tokyo", NOW + 60) is not None
    assert known.latency().link("fukuoka", "tokyo", NOW + 121) is None


def test_with_the_declared_fallback_a_stale_pair_takes_its_declared_link() -> None:
    known = catalog(declared_fallback=True)
    known.take_measurements([Measurement("fukuoka", "tokyo", 17.0, 1.0, NOW, "Prometheus")])
    link = known.latency().link("fukuoka", "tokyo", NOW + 121)
    assert link is not None
    assert (link.rtt_ms, link.source) == (12.0, "Declared")


def test_an_older_measurement_never_replaces_a_newer_one_and_the_matrix_is_cached() -> None:
    known = catalog()
    known.take_measurements([Measurement("fukuoka", "tokyo", 17.0, 1.0, NOW, "Prometheus")])
    matrix = known.latency()
    known.take_measurements([Measurement("fukuoka", "tokyo", 30.0, 1.0, NOW - 5, "Prometheus")])
    assert known.latency() is matrix
    assert known.measurements[0].rtt_ms == 17.0
    known.upsert_region(region("tokyo"))  # unchanged: still the same matrix
    assert known.latency() is matrix
    known.delete_region("fukuoka")
    assert known.latency() is not matrix
    assert known.measurements == ()
