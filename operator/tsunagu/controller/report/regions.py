"""Region.status: GPU capacity, allocation and ready nodes, and the links as measured — written
only when a number moves (no status churn every poll)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.connection import ClusterConnection
from tsunagu.controller.report.status import region_status_fields, timestamp
from tsunagu.controller.report.statusbook import merge_patch
from tsunagu.controller.settings import ReportingSettings
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.snapshot import ClusterSnapshot

logger = logging.getLogger(__name__)

MAX_LINKS = 64


def measured_links(
    matrix: LatencyMatrix, regions: Sequence[str], region: str, now: float
) -> list[dict[str, Any]]:
    """The links from `region` to every other region as they are known now, with their source."""
    links = []
    for other in regions:
        if other == region:
            continue
        link = matrix.link(region, other, now)
        if link is None:
            continue
        entry: dict[str, Any] = {
            "to": other,
            "rttMs": round(link.rtt_ms, 3),
            "jitterMs": round(link.jitter_ms, 3),
            "source": link.source,
        }
        if link.observed_at is not None:
            entry["observedAt"] = timestamp(link.observed_at)
        links.append(entry)
    return links[:MAX_LINKS]


def links_moved(old: list[dict[str, Any]], new: list[dict[str, Any]], threshold_ms: float) -> bool:
    if [(o["to"], o["source"]) for o in old] != [(n["to"], n["source"]) for n in new]:
        return True
    return any(abs(o["rttMs"] - n["rttMs"]) > threshold_ms for o, n in zip(old, new, strict=True))


class RegionStatusWriter:
    def __init__(
        self, catalog: Catalog, clusters: Sequence[ClusterConnection], settings: ReportingSettings
    ) -> None:
        self.catalog = catalog
        self.clusters = clusters
        self.settings = settings
        self._written: dict[str, dict[str, Any]] = {}

    async def write_all(self) -> None:
        now = time.time()
        # The engine's own accounting (nodeSelector-aware), so status and decisions agree.
        snapshot = self.catalog.snapshot((c.view for c in self.clusters), now)
        matrix = self.catalog.latency()
        names = sorted(self.catalog.regions)
        for name in names:
            try:
                await self._write(name, snapshot, matrix, names, now)
            except Exception:
                # One region the operator cannot describe must not leave the others stale.
                metrics.INTERNAL_ERRORS.labels(loop="region-status").inc()
                logger.exception("status of region %s not computed; going on", name)

    async def _write(
        self,
        name: str,
        snapshot: ClusterSnapshot,
        matrix: LatencyMatrix,
        names: Sequence[str],
        now: float,
    ) -> None:
        if not snapshot.has_region(name):
            return
        old = self._written.get(name, {})
        new = dict(region_status_fields(snapshot.capacity(name)))
        links = measured_links(matrix, names, name, now)
        old_links = old.get("links", [])
        threshold = self.settings.link_change_threshold_ms
        new["links"] = links if links_moved(old_links, links, threshold) else old_links
        patch = merge_patch(old, new)
        if not patch:
            return
        client = self.clusters[0].client  # Regions live in the operator's own cluster
        try:
            await client.patch_region_status(name, patch)
            self._written[name] = new
        except Exception as error:  # the region may be gone; try again next round
            logger.debug("region %s status not written: %s", name, error)

    def forget(self, name: str) -> None:
        self._written.pop(name, None)

    async def run(self) -> None:
        while True:
            try:
                await self.write_all()
            except Exception:
                logger.exception("region status round failed")
            await asyncio.sleep(self.settings.region_status_interval)
