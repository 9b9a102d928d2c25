"""One connection per cluster: its API client, its watches and the view of its nodes and pods.

The operator's own cluster (the hub) is one; each member cluster (a `Cluster` object) is another,
with a client read from its kubeconfig, a view whose node names are qualified by the member's
name, and a node watch of its own (the hub's nodes come through Kopf). `ClusterSet` holds them all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from tsunagu.api.types import JobKey
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.podwatch import (
    CAUGHT_UP_SECONDS,
    NodesChanged,
    PodsChanged,
    PodWatch,
    list_nodes,
    list_pods,
)
from tsunagu.controller.cluster.view import ClusterView, JobPod


class ClusterConnection:
    def __init__(
        self,
        name: str,
        client: Kube,
        on_pods_changed: PodsChanged,
        on_nodes_changed: NodesChanged | None = None,
    ) -> None:
        # "" is the operator's own cluster.
        self.name = name
        self.client = client
        self.view = ClusterView(cluster=name or None)
        self._on_pods_changed = on_pods_changed
        self._on_nodes_changed = on_nodes_changed or (lambda nodes: None)
        self._pods_version = ""
        self._nodes_version = ""
        self._watch: PodWatch | None = None
        self._node_watch: PodWatch | None = None
        # The first complete list is in the view (a member is listed in the background).
        self.primed = False

    @property
    def member(self) -> str | None:
        return self.name or None

    async def prime(self) -> None:
        """Lists the cluster's nodes and pods into the view, page by page, so the first
        decisions see the whole cluster and not a partial watch."""
        self._nodes_version = await list_nodes(self.client, self.view, self._on_nodes_changed)
        self._pods_version = await list_pods(self.client, self.view, self._on_pods_changed)
        self.primed = True

    def pod_watch(self) -> PodWatch:
        """The watch that keeps the view's pods current, from where `prime` listed them."""
        self._watch = PodWatch(
            self.client, self.view, self._on_pods_changed, self._pods_version, where=self.name
        )
        return self._watch

    def node_watch(self) -> PodWatch:
        """A member's node watch, from where `prime` listed them."""
        self._node_watch = PodWatch(
            self.client, self.view, self._on_nodes_changed, self._nodes_version,
            kind="nodes", where=self.name,
        )  # fmt: skip
        return self._node_watch

    async def view_current(self) -> None:
        """Returns once the view of pods has caught up with the API server (at once while the
        pod watch runs as usual; after an outage, once it has been open again for a moment)."""
        if self._watch is not None:
            await self._watch.caught_up()

    @property
    def current(self) -> bool:
        """Listed, and its pod watch open long enough to have caught up: what the view says of
        the cluster's pods may be acted on."""
        if not self.primed:
            return False
        if self._watch is None:
            return True
        since = self._watch.streaming_since
        return since is not None and time.monotonic() - since >= CAUGHT_UP_SECONDS

    async def wait_current(self, poll_seconds: float = 0.1) -> None:
        """Returns once `current` (which turns true with time passing, not with an event)."""
        while not self.current:  # noqa: ASYNC110
            await asyncio.sleep(poll_seconds)

    async def close(self) -> None:
        await self.client.close()


class ClusterSet:
    """The hub's connection and a member's per `Cluster` it can reach (added once its client is
    made, replaced when its kubeconfig changes, dropped with the Cluster)."""

    def __init__(self, hub: ClusterConnection) -> None:
        self.hub = hub
        self.members: dict[str, ClusterConnection] = {}

    def __iter__(self) -> Iterator[ClusterConnection]:
        yield self.hub
        yield from list(self.members.values())

    def get(self, name: str | None) -> ClusterConnection | None:
        """The connection of a member by name, the hub's for None or ""."""
        return self.hub if not name else self.members.get(name)

    def views(self) -> Iterator[ClusterView]:
        return (connection.view for connection in self)

    def pods_of(self, job: JobKey) -> dict[str, JobPod]:
        """The job's pods in every cluster, by `JobPod.key` (the name, qualified in a member)."""
        pods: dict[str, JobPod] = {}
        for connection in self:
            for pod in connection.view.job_pods.get(job, {}).values():
                pods[pod.key] = pod
        return pods

    def view_of(self, cluster: str | None) -> ClusterView | None:
        connection = self.get(cluster)
        return connection.view if connection is not None else None
