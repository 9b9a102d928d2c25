"""The pods of the cluster view, kept current by a watch of the operator's own.

Every pod holding GPUs is watched, and a burst brings thousands of pod events a second (created,
bound, running, for each replica). Through a Kopf handler each event cost a worker task, an
object logger, cause detection and an empty patch: about a third of the operator's CPU in a
burst, on the same cores as the API server it waits for. Here an event is one `json.loads` and
one update of the view. TrainingJobs, Regions, Datasets and nodes stay with Kopf.

The stream is read in a thread of its own (the Kubernetes client blocks) that hands each chunk
of events to the event loop; a daemon thread, so a watch waiting for data never holds up exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tsunagu.api.members import qualified_node, split_node
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.controller.cluster.watchstream import Gone, WatchStream

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300
# Consecutive failures to open a watch wait longer each time, up to a few seconds: once the API
# server is back (a restart, an outage), the view follows it again within that.
RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0)
# A watch opened again from its resourceVersion gets what it missed at once; this long after it
# opened, the view has caught up.
CAUGHT_UP_SECONDS = 1.0
POLL_SECONDS = 0.1

PodEvent = tuple[str, dict[str, Any]]
# Told which TrainingJobs' pods changed and whether GPUs came free.
PodsChanged = Callable[[set[JobKey], bool], None]
# Told which nodes (as the view names them) changed.
NodesChanged = Callable[[set[str]], None]


def observe_pods(view: ClusterView, events: list[PodEvent], on_change: PodsChanged) -> None:
    """Records pod events in the view, then says which TrainingJobs' pods changed and whether
    GPUs came free (the decision loop and the lifecycle take it from there)."""
    released_any = False
    jobs: set[JobKey] = set()
    for kind, body in events:
        if kind == "BOOKMARK":
            continue
        if kind == "DELETED":
            job, released = view.delete_pod(body)
        else:
            job, released = view.upsert_pod(body)
        released_any = released_any or released
        if job is not None:
            jobs.add(job)
    on_change(jobs, released_any)


async def list_pods(kube: Kube, view: ClusterView, on_change: PodsChanged) -> str:
    """Lists every pod into the view, page by page, forgetting pods the list no longer has;
    returns the list's resourceVersion, where the watch starts."""
    present: set[JobKey] = set()
    version, token = "", None
    while True:
        page = await kube.call(kube.list_page, "pods", token)
        version = version or page.resource_version
        for body in page.items:
            metadata = body.get("metadata") or {}
            present.add((metadata.get("namespace", "default"), metadata.get("name", "")))
        observe_pods(view, [("MODIFIED", body) for body in page.items], on_change)
        token = page.next_token
        if token is None:
            break
    jobs, released = view.forget_pods_except(present)
    on_change(jobs, released)
    return version


def observe_nodes(view: ClusterView, events: list[PodEvent], on_change: NodesChanged) -> None:
    """Records node events in the view (a member's: the hub's own nodes come through Kopf); says
    which nodes changed, by the view's names of them."""
    changed: set[str] = set()
    for kind, body in events:
        if kind == "BOOKMARK":
            continue
        name = str((body.get("metadata") or {}).get("name", ""))
        if kind == "DELETED":
            view.delete_node(name)
        else:
            view.upsert_node(body)
        changed.add(qualified_node(view.cluster, name))
    if changed:
        on_change(changed)


async def list_nodes(kube: Kube, view: ClusterView, on_change: NodesChanged) -> str:
    """Lists every node into the view, forgetting nodes the list no longer has; returns the
    list's resourceVersion."""
    present: set[str] = set()
    version, token = "", None
    while True:
        page = await kube.call(kube.list_page, "nodes", token)
        version = version or page.resource_version
        for body in page.items:
            present.add(str((body.get("metadata") or {}).get("name", "")))
        observe_nodes(view, [("MODIFIED", body) for body in page.items], on_change)
        token = page.next_token
        if token is None:
            break
    gone = {name for name in view.nodes if split_node(name)[1] not in present}
    for name in gone:
        view.delete_node(split_node(name)[1])
    if gone:
        on_change(gone)
    return version


class PodWatch:
    """Watches pods (or, with `kind="nodes"`, nodes) for as long as the operator runs: resumes
    after the last event it handed to the view, lists again when the API server no longer has
    that version."""

    def __init__(
        self,
        kube: Kube,
        view: ClusterView,
        on_change: Callable[[Any], None] | PodsChanged,
        resource_version: str,
        kind: str = "pods",
        where: str = "",
    ) -> None:
        self.kube = kube
        self.view = view
        self.on_change: Any = on_change
        self.resource_version = resource_version
        self.kind = kind
        # Said in the log: which cluster's watch this is ("" for the hub).
        self.name = f"{kind[:-1]} watch{f' of cluster {where}' if where else ''}"
        # time.monotonic() when the open watch was opened; None while none is open.
        self.streaming_since: float | None = None
        self._failures = 0
        # The next watch starts where a list just ended: nothing is missed, it is current once
        # open.
        self._from_list = True

    async def run(self) -> None:
        relist = False
        while True:
            try:
                if relist:
                    self.resource_version = await self._list()
                    relist = False
                    self._from_list = True
                await self._watch_once()
                metrics.POD_WATCH_RESTARTS.labels(reason="Ended").inc()
            except Gone as error:
                logger.info("%s expired (%s): listing again", self.name, error)
                metrics.POD_WATCH_RESTARTS.labels(reason="Expired").inc()
                relist = True
            except Exception as error:
                self._from_list = False  # what was missed meanwhile has still to arrive
                metrics.POD_WATCH_RESTARTS.labels(reason="Failed").inc()
                delay = RETRY_SECONDS[min(self._failures, len(RETRY_SECONDS) - 1)]
                self._failures += 1
                logger.warning("%s failed (%s); again in %.1f s", self.name, error, delay)
                await asyncio.sleep(delay)
            finally:
                self.streaming_since = None

    async def caught_up(self) -> None:
        """Returns once a watch is open and has been for CAUGHT_UP_SECONDS: what happened while
        none was (an API-server restart, an outage) has reached the view by then. Immediate
        while the watch runs as usual."""
        while True:
            since = self.streaming_since
            if since is not None and time.monotonic() - since >= CAUGHT_UP_SECONDS:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _list(self) -> str:
        if self.kind == "nodes":
            return await list_nodes(self.kube, self.view, self.on_change)
        return await list_pods(self.kube, self.view, self.on_change)

    def _deliver(self, events: list[PodEvent]) -> None:
        if self.kind == "nodes":
            observe_nodes(self.view, events, self.on_change)
        else:
            observe_pods(self.view, events, self.on_change)
        version = (events[-1][1].get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)

    async def _watch_once(self) -> None:
        """One watch request, until the server ends it or it fails."""
        loop = asyncio.get_running_loop()
        stream: WatchStream = await self.kube.call(
            self.kube.watch, self.kind, self.resource_version, WATCH_TIMEOUT_SECONDS
        )
        # The API server answered the watch: the next failure is a first one again.
        self._failures = 0
        now = time.monotonic()
        self.streaming_since = now - CAUGHT_UP_SECONDS if self._from_list else now
        self._from_list = False
        ended: asyncio.Future[None] = loop.create_future()

        def read() -> None:
            error: BaseException | None = None
            try:
                for events in stream.batches():
                    loop.call_soon_threadsafe(self._deliver, events)
            except BaseException as raised:  # handed to the loop, raised there
                error = raised
            with contextlib.suppress(RuntimeError):  # the loop has closed: the operator exits
                loop.call_soon_threadsafe(_settle, ended, error)

        threading.Thread(target=read, name="tsunagu-pod-watch", daemon=True).start()
        try:
            await ended
        finally:
            stream.close()


def _settle(ended: asyncio.Future[None], error: BaseException | None) -> None:
    if ended.done():
        return
    if error is not None:
        ended.set_exception(error)
    else:
        ended.set_result(None)
