"""Member clusters: the `Cluster` objects, a client and a `ClusterConnection` (watches and view)
for each from the kubeconfig in its Secret, and whether it answers — written to the Cluster's
status and handed to the catalog, whose regions in that cluster take no work while it is unknown
or unreachable (docs/clusters.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client as kubernetes_client
from kubernetes import config as kubernetes_config
from kubernetes.client.exceptions import ApiException

from tsunagu.api.fields import SpecError
from tsunagu.api.parse import parse_cluster
from tsunagu.api.types import ClusterSpec
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Kube, Lane, NotLeading, WriteGate
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.cluster.podwatch import NodesChanged, PodsChanged
from tsunagu.controller.report.status import timestamp

logger = logging.getLogger(__name__)

REACHABLE = "Reachable"
CONNECTED = "Connected"
SECRET_MISSING = "SecretMissing"
KUBECONFIG_INVALID = "KubeconfigInvalid"
CLUSTER_UNREACHABLE = "ClusterUnreachable"
INVALID_SPEC = "InvalidSpec"
# A reachable member whose view is still being listed, or whose watch is catching up.
SYNCING = "Syncing"
# A member's first list is tried again this long after it failed.
PRIME_RETRY_SECONDS = 5.0


@dataclass
class MemberState:
    spec: ClusterSpec | None
    generation: int | None = None
    reason: str = "Pending"
    message: str = "not checked yet"
    version: str | None = None
    last_contact: float | None = None
    client: Kube | None = None
    # Which kubeconfig the client was made from: a changed Secret makes a new client.
    digest: str | None = None
    written: dict[str, Any] = field(default_factory=dict)
    # The watches of its connection (cancelled when the client is replaced or the Cluster goes).
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        return self.reason == CONNECTED


def configuration_from(kubeconfig: Mapping[str, Any]) -> Any:
    """A client configuration from a kubeconfig's contents (its current context)."""
    configuration = kubernetes_client.Configuration()
    loader: Any = kubernetes_config
    loader.load_kube_config_from_dict(dict(kubeconfig), client_configuration=configuration)
    return configuration


def cluster_status(state: MemberState, now: float) -> dict[str, Any]:
    """The Cluster's status as the CRD defines it."""
    status: dict[str, Any] = {
        "conditions": [
            {
                "type": REACHABLE,
                "status": "True" if state.reachable else "False",
                "reason": state.reason,
                "message": state.message[:1024],
                "lastTransitionTime": timestamp(now),
            }
        ],
    }
    if state.version:
        status["serverVersion"] = state.version
    if state.last_contact is not None:
        status["lastContactTime"] = timestamp(state.last_contact)
    if state.generation is not None:
        status["observedGeneration"] = state.generation
    return status


class MemberClusters:
    def __init__(
        self,
        *,
        client: Kube,
        namespace: str,
        catalog: Catalog,
        clusters: ClusterSet,
        on_pods_changed: PodsChanged,
        on_nodes_changed: NodesChanged,
        on_reachability: Callable[[str], Awaitable[None]] | None = None,
        timeout_seconds: float = 5.0,
        gang_connections: int = 16,
    ) -> None:
        # The hub's client: the Secrets are read, and the Cluster statuses written, through it.
        self.client = client
        self.namespace = namespace
        self.catalog = catalog
        self.clusters = clusters
        self.on_pods_changed = on_pods_changed
        self.on_nodes_changed = on_nodes_changed
        # Told when a member became reachable or stopped being so.
        self.on_reachability = on_reachability
        self.timeout_seconds = timeout_seconds
        # A member takes gangs as the hub does: as many connections for their writes.
        self.gang_connections = gang_connections
        # Every write to a member asks it first, as writes to the hub do (the Lease).
        self.gate: WriteGate | None = None
        self.members: dict[str, MemberState] = {}

    def spec(self, name: str) -> ClusterSpec | None:
        state = self.members.get(name)
        return state.spec if state is not None else None

    def usable(self, name: str) -> tuple[str, str]:
        """(reason, message): `Connected` when the member answers and its view is current, so
        what it shows of a job's pods may be acted on; else why not."""
        state = self.members.get(name)
        if state is None:
            return "ClusterMissing", "no Cluster object of that name"
        if not state.reachable:
            return state.reason, state.message
        connection = self.clusters.members.get(name)
        if connection is None or not connection.current:
            return SYNCING, "the member answers; its nodes and pods are being listed"
        return CONNECTED, state.message

    def observe(self, body: Mapping[str, Any]) -> str:
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name"))
        state = self.members.setdefault(name, MemberState(spec=None))
        state.generation = metadata.get("generation")
        try:
            state.spec = parse_cluster(body)
        except SpecError as error:
            state.spec = None
            self._verdict(name, state, INVALID_SPEC, str(error))
        return name

    async def deleted(self, name: str) -> None:
        """The Cluster is gone: its connection closes, its regions take no work."""
        self.catalog.member_verdicts.pop(name, None)
        state = self.members.pop(name, None)
        if state is not None:
            await self._disconnect(name, state)
            if state.client is not None:
                await state.client.close()

    async def check_all(self, write: bool) -> None:
        for name in list(self.members):
            try:
                await self.check(name, write)
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="member-clusters").inc()
                logger.exception("checking cluster %s failed", name)

    async def check(self, name: str, write: bool) -> None:
        """Connects to the member (anew when its kubeconfig changed), asks its version, and
        records the verdict; the leader (`write`) also writes the Cluster's status."""
        state = self.members.get(name)
        if state is None:
            return
        if state.spec is not None:
            await self._connect_and_ask(name, state, state.spec)
        if write:
            await self._write_status(name, state)

    async def _connect_and_ask(self, name: str, state: MemberState, spec: ClusterSpec) -> None:
        try:
            secret = await self.client.call(
                self.client.read_secret, self.namespace, spec.secret_name
            )
        except ApiException as error:
            where = f"Secret {self.namespace}/{spec.secret_name}"
            problem = (
                "does not exist" if error.status == 404 else f"cannot be read ({error.status})"
            )
            self._verdict(name, state, SECRET_MISSING, f"{where} {problem}")
            return
        encoded = (secret.get("data") or {}).get(spec.secret_key)
        if not encoded:
            self._verdict(
                name, state, KUBECONFIG_INVALID,
                f"Secret {self.namespace}/{spec.secret_name} has no key {spec.secret_key}",
            )  # fmt: skip
            return
        digest = hashlib.sha256(encoded.encode()).hexdigest()
        if digest != state.digest or state.client is None:
            try:
                kubeconfig = yaml.safe_load(base64.b64decode(encoded))
                if not isinstance(kubeconfig, Mapping):
                    raise ValueError("not a kubeconfig map")
                # Reads: the two watches, and GETs of anchors and pods (many at once while jobs
                # are deleted or gangs rolled back).
                member = Kube(
                    configuration_from(kubeconfig), pool_size=16,
                    connections={Lane.GANGS: self.gang_connections, Lane.REPORTS: 4},
                )  # fmt: skip
            except Exception as error:  # a bad kubeconfig fails in many ways, each an answer
                text = f"Secret {self.namespace}/{spec.secret_name} key {spec.secret_key}"
                self._verdict(name, state, KUBECONFIG_INVALID, f"{text}: {error}")
                return
            member.gate = self.gate
            await self._disconnect(name, state)
            if state.client is not None:
                await state.client.close()
            state.client, state.digest = member, digest
            self._connect(name, state, member)
        try:
            state.version = await state.client.server_version(within=self.timeout_seconds)
        except Exception as error:
            self._verdict(
                name, state, CLUSTER_UNREACHABLE, f"the API server did not answer: {error}"
            )
            return
        state.last_contact = time.time()
        self._verdict(name, state, CONNECTED, f"API server {state.version} answers")

    def _connect(self, name: str, state: MemberState, client: Kube) -> None:
        """A connection for the member's new client: listed, then watched, in the background
        (a slow member never holds up the hub)."""
        connection = ClusterConnection(
            name, client, on_pods_changed=self.on_pods_changed,
            on_nodes_changed=self.on_nodes_changed,
        )  # fmt: skip
        self.clusters.members[name] = connection

        async def follow() -> None:
            while True:
                try:
                    await connection.prime()
                    break
                except Exception as error:
                    logger.warning("listing cluster %s failed (%s); again soon", name, error)
                    await asyncio.sleep(PRIME_RETRY_SECONDS)
            logger.info("cluster %s: %d nodes listed", name, len(connection.view.nodes))
            await asyncio.gather(connection.pod_watch().run(), connection.node_watch().run())

        task = asyncio.create_task(follow(), name=f"cluster {name}")
        task.add_done_callback(_log_failure)
        state.tasks.append(task)

    async def _disconnect(self, name: str, state: MemberState) -> None:
        tasks, state.tasks = state.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.clusters.members.pop(name, None)

    def _verdict(self, name: str, state: MemberState, reason: str, message: str) -> None:
        changed = state.reason != reason
        if (state.reason, state.message) != (reason, message):
            logger.info("cluster %s: %s: %s", name, reason, message)
        state.reason, state.message = reason, message
        self.catalog.member_verdicts[name] = (
            (reason, f"cluster {name}: {message}")
            if reason == CONNECTED
            else (reason, f"cluster {name} is not usable ({reason}): {message}")
        )
        if changed and self.on_reachability is not None:
            callback = asyncio.ensure_future(self.on_reachability(name))
            callback.add_done_callback(_log_failure)

    async def _write_status(self, name: str, state: MemberState) -> None:
        status = cluster_status(state, time.time())
        condition = status["conditions"][0]
        previous = (state.written.get("conditions") or [{}])[0]
        if previous.get("status") == condition["status"]:
            condition["lastTransitionTime"] = previous.get(
                "lastTransitionTime", condition["lastTransitionTime"]
            )
        if status == state.written:
            return
        try:
            await self.client.patch_cluster_status(name, status)
        except NotLeading:
            return
        except ApiException as error:
            if error.status == 404:
                return  # deleted meanwhile
            metrics.REPORT_FAILURES.labels(kind="cluster").inc()
            logger.warning("status of cluster %s not written: %s", name, error)
            return
        state.written = status

    async def run(self, interval: float, leading: Any) -> None:
        """Checks every member every `interval` seconds; `leading()` says whether to write."""
        while True:
            await self.check_all(write=bool(leading()))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for name, state in list(self.members.items()):
            await self._disconnect(name, state)
            if state.client is not None:
                await state.client.close()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("member cluster task failed", exc_info=task.exception())
