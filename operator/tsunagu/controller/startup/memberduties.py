"""What the operator does when a member cluster changes: its nodes (a gang on a lost node is
looked at), its reachability (its jobs judged again once its view is current, orphaned anchors
swept). Wired into `Operator` as callbacks of `MemberClusters`; acts only on the leader."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tsunagu.api.members import MEMBER_OBJECTS_FINALIZER, split_node
from tsunagu.api.types import JobKey

if TYPE_CHECKING:
    from tsunagu.controller.startup.operator import Operator

logger = logging.getLogger(__name__)

# How long a member that answers again may take to show its pods before its jobs are judged.
MEMBER_SYNC_SECONDS = 60.0


class MemberDuties:
    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    def nodes_changed(self, nodes: set[str]) -> None:
        """A member's nodes changed (its own watch): decisions look again; a gang on a node
        lost there is looked at by the lifecycle."""
        self.operator.queue.wake()
        if not self.operator.leading:
            return
        for connection in self.operator.clusters.members.values():
            view = connection.view
            lost = {
                node for node in nodes
                if split_node(node)[0] == connection.name and not view.node_alive(node)
            }  # fmt: skip
            if not lost:
                continue
            for key, pods in list(view.job_pods.items()):
                if any(pod.node_name in lost for pod in pods.values()):
                    self.operator.lifecycle.reconcile_soon(key)

    async def reachability_changed(self, name: str) -> None:
        """A member became reachable or stopped being so: its jobs say so (ClusterReachable)
        and, once its view is current again, are reconciled with what it shows; anchors of jobs
        the hub no longer has are removed there."""
        self.operator.queue.wake()
        if not self.operator.leading:
            return
        connection = self.operator.clusters.members.get(name)
        state = self.operator.members.members.get(name)
        if connection is not None and state is not None and state.reachable:
            try:
                await asyncio.wait_for(connection.wait_current(), MEMBER_SYNC_SECONDS)
            except TimeoutError:
                logger.warning("cluster %s answers but its view did not catch up", name)
                return
            await self.sweep(name)
        for key in self.jobs_in(name):
            self.operator.lifecycle.reconcile_soon(key)

    async def sweep(self, name: str) -> None:
        connection = self.operator.clusters.members.get(name)
        if connection is None or not self.operator.leading:
            return
        try:
            await self.operator.member_objects.sweep(connection, self.operator.jobs.uids())
        except Exception as error:
            logger.warning("cluster %s: anchors not swept: %s", name, error)

    def jobs_in(self, name: str) -> set[JobKey]:
        """Jobs placed in the member (their status) or with pods there, and every job holding
        the member finalizer without a region (it may have a gang there not seen yet)."""
        keys: set[JobKey] = set()
        connection = self.operator.clusters.members.get(name)
        if connection is not None:
            keys.update(connection.view.job_pods)
        for key in self.operator.jobs:
            status = self.operator.statuses.current(key)
            if status.get("cluster") == name:
                keys.add(key)
            elif not status.get("region"):
                metadata = (self.operator.jobs.body(key) or {}).get("metadata") or {}
                if MEMBER_OBJECTS_FINALIZER in (metadata.get("finalizers") or ()):
                    keys.add(key)
        return {key for key in keys if key in self.operator.jobs}
