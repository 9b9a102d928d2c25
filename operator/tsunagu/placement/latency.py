"""The latency matrix: RTT and jitter per ordered region pair, from measurements and declarations.

Rules (DESIGN.md §4), per pair: a fresh measurement wins; a pair that was measured but whose
measurement has gone stale is unknown — never silently its declared value, which is what the
operator of the link hoped for, not what was seen — unless the declared fallback is allowed; a
pair never measured takes its declared link, and a link declared on either side holds both ways
(the larger RTT where both sides declare one); inside a region the RTT is 0 ms; anything else is
unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from tsunagu.api.types import GeoPoint, RegionSpec

DEFAULT_STALENESS_SECONDS = 120.0


class LinkSource(StrEnum):
    """Where an RTT came from when it is not a measurement (a measurement names its own source,
    the adapter that produced it, so this module names none)."""

    Declared = "Declared"
    Local = "Local"


# The source of a measurement whose adapter did not name itself.
MEASURED = "Measured"


@dataclass(frozen=True, slots=True)
class Measurement:
    """One measured RTT from a probe in `source_region` to `target_region`."""

    source_region: str
    target_region: str
    rtt_ms: float
    jitter_ms: float
    observed_at: float  # unix seconds
    source: str = MEASURED  # the adapter that measured it, e.g. "Prometheus"


@dataclass(frozen=True, slots=True)
class LinkEstimate:
    rtt_ms: float
    jitter_ms: float
    source: str  # a measurement's source, or a LinkSource value
    observed_at: float | None
    bandwidth_gbps: float | None

    @property
    def rtt_with_jitter_ms(self) -> float:
        return self.rtt_ms + self.jitter_ms


@dataclass(frozen=True, slots=True)
class _Declared:
    rtt_ms: float
    bandwidth_gbps: float | None


_LOCAL = LinkEstimate(0.0, 0.0, LinkSource.Local, None, None)


def _recency(measurement: Measurement) -> tuple[float, float, float]:
    return (measurement.observed_at, measurement.rtt_ms, measurement.jitter_ms)


def _merge_declared(first: _Declared, second: _Declared) -> _Declared:
    # Both sides declared the link: trust the pessimistic RTT and the narrower pipe.
    bandwidths = [b for b in (first.bandwidth_gbps, second.bandwidth_gbps) if b is not None]
    return _Declared(max(first.rtt_ms, second.rtt_ms), min(bandwidths) if bandwidths else None)


class LatencyMatrix:
    """An immutable view of inter-region latency at one moment; build it with `build`."""

    __slots__ = (
        "_declared",
        "_declared_fallback",
        "_locations",
        "_measured",
        "_staleness_seconds",
    )

    def __init__(
        self,
        declared: Mapping[tuple[str, str], _Declared],
        measured: Mapping[tuple[str, str], Measurement],
        locations: Mapping[str, GeoPoint],
        staleness_seconds: float,
        declared_fallback: bool = False,
    ) -> None:
        self._declared = MappingProxyType(dict(declared))
        self._measured = MappingProxyType(dict(measured))
        self._locations = MappingProxyType(dict(locations))
        self._staleness_seconds = staleness_seconds
        self._declared_fallback = declared_fallback

    @classmethod
    def build(
        cls,
        regions: Iterable[RegionSpec],
        measurements: Iterable[Measurement] = (),
        staleness_seconds: float = DEFAULT_STALENESS_SECONDS,
        declared_fallback: bool = False,
    ) -> LatencyMatrix:
        """`declared_fallback`: a pair whose measurement went stale takes its declared link
        instead of being unknown."""
        declared: dict[tuple[str, str], _Declared] = {}
        locations: dict[str, GeoPoint] = {}
        for region in regions:
            if region.location is not None:
                locations[region.name] = region.location
            for link in region.links:
                if link.to == region.name:
                    continue
                entry = _Declared(link.rtt_ms, link.bandwidth_gbps)
                for pair in ((region.name, link.to), (link.to, region.name)):
                    known = declared.get(pair)
                    declared[pair] = entry if known is None else _merge_declared(known, entry)
        measured: dict[tuple[str, str], Measurement] = {}
        for measurement in measurements:
            pair = (measurement.source_region, measurement.target_region)
            if pair[0] == pair[1]:
                continue
            latest = measured.get(pair)
            # The newest wins; two at the same instant resolve to the larger RTT, whatever the
            # order they arrived in.
            if latest is None or _recency(measurement) > _recency(latest):
                measured[pair] = measurement
        return cls(declared, measured, locations, staleness_seconds, declared_fallback)

    @property
    def staleness_seconds(self) -> float:
        return self._staleness_seconds

    def location(self, region: str) -> GeoPoint | None:
        return self._locations.get(region)

    def _fresh(self, pair: tuple[str, str], now: float) -> Measurement | None:
        measurement = self._measured.get(pair)
        if measurement is None or now - measurement.observed_at > self._staleness_seconds:
            return None
        return measurement

    def link(self, a: str, b: str, now: float) -> LinkEstimate | None:
        """What is known of the RTT from region `a` to region `b` at time `now`."""
        if a == b:
            return _LOCAL
        declared = self._declared.get((a, b))
        bandwidth = declared.bandwidth_gbps if declared is not None else None
        # A round trip is symmetric, so a fresh probe in the other direction beats a declaration.
        measurement = self._fresh((a, b), now) or self._fresh((b, a), now)
        if measurement is not None:
            return LinkEstimate(
                measurement.rtt_ms,
                measurement.jitter_ms,
                measurement.source,
                measurement.observed_at,
                bandwidth,
            )
        if declared is None:
            return None
        measured_once = (a, b) in self._measured or (b, a) in self._measured
        if measured_once and not self._declared_fallback:
            return None  # the measurement went stale: what the link does now is not known
        return LinkEstimate(declared.rtt_ms, 0.0, LinkSource.Declared, None, bandwidth)

    def measured_pairs(self) -> tuple[tuple[str, str], ...]:
        """Ordered pairs with a measurement, fresh or not, sorted."""
        return tuple(sorted(self._measured))

    def measurements(self) -> tuple[Measurement, ...]:
        """The latest measurement of every measured pair, sorted by pair."""
        return tuple(self._measured[pair] for pair in self.measured_pairs())

    def declared_pairs(self) -> tuple[tuple[str, str], ...]:
        """Ordered pairs with a declared link (both directions of every declaration), sorted."""
        return tuple(sorted(self._declared))
