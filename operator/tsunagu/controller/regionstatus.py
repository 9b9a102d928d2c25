"""Region.status: GPU capacity, allocation and ready nodes, and the links as measured — written
only when a number moves (no status churn every poll)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tsunagu.controller.runtime import Runtime
from tsunagu.controller.status import region_status_fields, timestamp
from tsunagu.controller.statusbook import merge_patch

logger = logging.getLogger(__name__)

MAX_LINKS = 64


def measured_links(rt: Runtime, region: str, now: float) -> list[dict[str, Any]]:
    matrix = rt.view.latency()
    links = []
    for other in sorted(rt.view.regions):
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


@dataclass
class RegionStatusWriter:
    _written: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def write_all(self, rt: Runtime) -> None:
        now = time.time()
        # The engine's own accounting (nodeSelector-aware), so status and decisions agree.
        snapshot = rt.view.snapshot(now)
        for name in sorted(rt.view.regions):
            if not snapshot.has_region(name):
                continue
            old = self._written.get(name, {})
            new = dict(region_status_fields(snapshot.capacity(name)))
            links = measured_links(rt, name, now)
            old_links = old.get("links", [])
            threshold = rt.config.link_change_threshold_ms
            new["links"] = links if links_moved(old_links, links, threshold) else old_links
            patch = merge_patch(old, new)
            if not patch:
                continue
            try:
                await rt.kube.patch_region_status(name, patch)
                self._written[name] = new
            except Exception as error:  # the region may be gone; try again next round
                logger.debug("region %s status not written: %s", name, error)

    def forget(self, name: str) -> None:
        self._written.pop(name, None)


async def region_status_loop(rt: Runtime, writer: RegionStatusWriter) -> None:
    while True:
        try:
            await writer.write_all(rt)
        except Exception:
            logger.exception("region status round failed")
        await asyncio.sleep(rt.config.region_status_interval)
