"""One connection per cluster: its API client, its pod watch and the view of its nodes and pods.

The operator's own cluster is one instance; a member cluster would be a second, with a client
of its own, read from its kubeconfig.
"""

from __future__ import annotations

from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.podwatch import PodsChanged, PodWatch, list_pods
from tsunagu.controller.cluster.view import ClusterView


class ClusterConnection:
    def __init__(self, name: str, client: Kube, on_pods_changed: PodsChanged) -> None:
        # "" is the operator's own cluster.
        self.name = name
        self.client = client
        self.view = ClusterView()
        self._on_pods_changed = on_pods_changed
        self._pods_version = ""
        self._watch: PodWatch | None = None

    async def prime(self) -> None:
        """Lists the cluster's nodes and pods into the view, page by page, so the first
        decisions see the whole cluster and not a partial watch."""
        token = None
        while True:
            page = await self.client.call(self.client.list_page, "nodes", token)
            for node in page.items:
                self.view.upsert_node(node)
            token = page.next_token
            if token is None:
                break
        self._pods_version = await list_pods(self.client, self.view, self._on_pods_changed)

    def pod_watch(self) -> PodWatch:
        """The watch that keeps the view's pods current, from where `prime` listed them."""
        self._watch = PodWatch(self.client, self.view, self._on_pods_changed, self._pods_version)
        return self._watch

    async def view_current(self) -> None:
        """Returns once the view of pods has caught up with the API server (at once while the
        pod watch runs as usual; after an outage, once it has been open again for a moment)."""
        if self._watch is not None:
            await self._watch.caught_up()

    async def close(self) -> None:
        await self.client.close()
