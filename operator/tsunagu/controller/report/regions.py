"""Region.status: GPU capacity, allocation and ready nodes, and the links as measured — written
only when a number moves (no status churn every poll)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from tsunagu.api.names import API_VERSION, GPU_RESOURCE, REGION_KIND
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.connection import ClusterSet
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.controller.report.events import EventRecorder, event_body
from tsunagu.controller.report.status import ConditionUpdate, region_status_fields, timestamp
from tsunagu.controller.report.statusbook import merge_patch
from tsunagu.controller.settings import ReportingSettings
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.noderules import format_amount
from tsunagu.placement.snapshot import ClusterSnapshot

logger = logging.getLogger(__name__)

# The Region condition that says whether it takes new work.
AVAILABLE = "Available"

MAX_LINKS = 64
MAX_OVERCOMMITTED = 64
# Per node, the summed requests of its bound pods (ClusterView.node_usage).
NodeUsage = dict[str, dict[str, int]]


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


def overcommitted(view: ClusterView, usage: NodeUsage) -> dict[str, str]:
    """Nodes whose bound, unfinished pods request more of a resource than the node allocates
    → what is over, e.g. "nvidia.com/gpu 10/8"."""
    found = {}
    for node_name, used in usage.items():
        node = view.nodes.get(node_name)
        if node is None:
            continue
        allocatable = (
            dict(node.allocatable) if node.allocatable is not None
            else {GPU_RESOURCE: node.allocatable_gpus}
        )  # fmt: skip
        over = [
            f"{resource} {format_amount(resource, amount)}/"
            f"{format_amount(resource, allocatable.get(resource, 0))}"
            for resource, amount in sorted(used.items())
            if amount > allocatable.get(resource, 0)
            and (resource in allocatable or node.allocatable is not None)
        ]
        if over:
            found[node_name] = ", ".join(over)
    return found


def gpus_held(view: ClusterView, usage: NodeUsage, nodes: Sequence[str]) -> int:
    """GPUs requested by bound, unfinished pods on the schedulable ones of `nodes`: the real
    figure, above the allocatable when nodes are over-committed."""
    return sum(
        usage.get(name, {}).get(GPU_RESOURCE, 0)
        for name in nodes
        if name in view.nodes and view.nodes[name].schedulable
    )


class RegionStatusWriter:
    def __init__(
        self,
        catalog: Catalog,
        clusters: ClusterSet,
        settings: ReportingSettings,
        events: EventRecorder,
    ) -> None:
        self.events = events
        self.catalog = catalog
        self.clusters = clusters
        self.settings = settings
        self._written: dict[str, dict[str, Any]] = {}
        # Over-committed nodes already reported with an Event, and what was over.
        self._reported: dict[str, str] = {}
        self._over: dict[str, str] = {}
        self._usage: list[tuple[ClusterView, NodeUsage]] = []

    async def write_all(self) -> None:
        now = time.time()
        # The engine's own accounting (nodeSelector-aware), so status and decisions agree.
        snapshot = self.catalog.snapshot((c.view for c in self.clusters), now)
        matrix = self.catalog.latency()
        names = sorted(self.catalog.regions)
        self._over = {}
        self._usage = [(c.view, c.view.node_usage()) for c in self.clusters]
        for view, usage in self._usage:
            self._over.update(overcommitted(view, usage))
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
        nodes = snapshot.nodes_of(name)
        # Not clamped to the allocatable: an over-commit must show, not hide.
        new["gpuAllocated"] = sum(gpus_held(view, usage, nodes) for view, usage in self._usage)
        over = {node: self._over[node] for node in nodes if node in self._over}
        new["overcommittedNodes"] = [f"{node} ({what})" for node, what in sorted(over.items())][
            :MAX_OVERCOMMITTED
        ]
        metrics.OVERCOMMITTED_NODES.labels(region=name).set(len(over))
        self._report_overcommit(name, over)
        new["conditions"] = [self._available(name, snapshot, old, now)]
        links = measured_links(matrix, names, name, now)
        old_links = old.get("links", [])
        threshold = self.settings.link_change_threshold_ms
        new["links"] = links if links_moved(old_links, links, threshold) else old_links
        patch = merge_patch(old, new)
        if not patch:
            return
        client = self.clusters.hub.client  # Regions live in the operator's own cluster
        try:
            await client.patch_region_status(name, patch)
            self._written[name] = new
        except Exception as error:  # the region may be gone; try again next round
            logger.debug("region %s status not written: %s", name, error)

    def _available(
        self, name: str, snapshot: ClusterSnapshot, old: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """Whether the region takes new work, and why not (its member cluster, a cordon, no
        ready node); the transition time stays while the status does."""
        spec = snapshot.region(name)
        if spec.unavailable is not None and spec.cluster is not None:
            reason, _ = self.catalog.member_verdict(spec.cluster)
            condition = ConditionUpdate(AVAILABLE, False, reason, spec.unavailable)
        elif spec.cordoned:
            condition = ConditionUpdate(AVAILABLE, False, "Cordoned", "spec.cordoned is true")
        elif not snapshot.is_available(name):
            condition = ConditionUpdate(AVAILABLE, False, "NoReadyNodes", "no ready node")
        else:
            condition = ConditionUpdate(AVAILABLE, True, "Available", "takes new work")
        body = {
            "type": AVAILABLE,
            "status": "True" if condition.status else "False",
            "reason": condition.reason,
            "message": condition.message[:1024],
            "lastTransitionTime": timestamp(now),
        }
        for previous in old.get("conditions") or []:
            if previous.get("type") == AVAILABLE and previous.get("status") == body["status"]:
                body["lastTransitionTime"] = previous.get("lastTransitionTime")
        return body

    def _report_overcommit(self, region: str, over: dict[str, str]) -> None:
        """A Warning Event on the Region for each node newly found over-committed."""
        for node, what in sorted(over.items()):
            if self._reported.get(node) == what:
                continue
            self._reported[node] = what
            message = (
                f"node {node} is over-committed ({what}): pods bound by another scheduler or by "
                "hand hold more than it allocates; it takes no new gang that needs it"
            )
            involved = {
                "apiVersion": API_VERSION,
                "kind": REGION_KIND,
                "metadata": {"name": region},
            }
            now = timestamp(time.time())
            # Through the recorder's writer: a new leadership term gets a writer of its own.
            body = event_body(involved, "Warning", "NodeOvercommitted", message, now)
            self.events.writer.post_event(body)
        for node in [n for n in self._reported if n not in self._over]:
            del self._reported[node]

    def forget(self, name: str) -> None:
        self._written.pop(name, None)

    async def run(self) -> None:
        while True:
            try:
                await self.write_all()
            except Exception:
                logger.exception("region status round failed")
            await asyncio.sleep(self.settings.region_status_interval)
