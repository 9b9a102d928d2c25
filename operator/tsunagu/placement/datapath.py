"""The path from where a job would compute to the nearest copy of its data, and what it costs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tsunagu.api.types import DataProfile
from tsunagu.placement.latency import LatencyMatrix, LinkSource
from tsunagu.placement.throughput import ThroughputModel, choose_model, fibre_floor_ms


@dataclass(frozen=True, slots=True)
class DataPath:
    site: str  # the region holding the copy that is read
    rtt_ms: float  # the RTT the model uses: measured + jitter, never below the fibre floor
    bandwidth_gbps: float | None
    source: str  # a LinkSource value

    @property
    def local(self) -> bool:
        return self.source == LinkSource.Local


def effective_rtt_ms(matrix: LatencyMatrix, region: str, site: str, now: float) -> float | None:
    """RTT from `region` to `site` as the model uses it, or None when unknown."""
    path = _path_to(matrix, region, site, now)
    return None if path is None else path.rtt_ms


def _path_to(matrix: LatencyMatrix, region: str, site: str, now: float) -> DataPath | None:
    link = matrix.link(region, site, now)
    if link is None:
        return None
    rtt = link.rtt_ms + link.jitter_ms
    if link.source != LinkSource.Local:
        here, there = matrix.location(region), matrix.location(site)
        if here is not None and there is not None:
            rtt = max(rtt, fibre_floor_ms(here, there))
    return DataPath(site, rtt, link.bandwidth_gbps, link.source)


def nearest_copy(
    matrix: LatencyMatrix, region: str, sites: Iterable[str], now: float
) -> DataPath | None:
    """The known path with the smallest RTT to any of the sites (ties by site name)."""
    best: DataPath | None = None
    for site in sites:
        path = _path_to(matrix, region, site, now)
        if path is not None and (
            best is None or (path.rtt_ms, path.site) < (best.rtt_ms, best.site)
        ):
            best = path
    return best


def modelled_loss(model: ThroughputModel, path: DataPath, default_bandwidth_gbps: float) -> float:
    """Throughput loss of reading over `path` as `model` predicts it."""
    bandwidth = path.bandwidth_gbps if path.bandwidth_gbps is not None else default_bandwidth_gbps
    return model.loss(path.rtt_ms, bandwidth, path.local)


def predicted_loss(
    profile: DataProfile | None, path: DataPath, default_bandwidth_gbps: float
) -> float:
    """Throughput loss of reading over `path`: the data-stall model with a profile, else the
    reference curve."""
    return modelled_loss(choose_model(profile, None, {}), path, default_bandwidth_gbps)
