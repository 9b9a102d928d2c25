"""Member clusters: the `Cluster` objects, a client for each from the kubeconfig in its Secret,
and whether it answers — written to the Cluster's status and handed to the catalog, whose
regions in that cluster take no work while it is unknown or unreachable.

What exists today is the first slice of placing gangs in other clusters: the connection and
its health. Gangs are not yet created in a member, so a region in a reachable member says that
too, rather than looking empty (docs/clusters.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Mapping
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
from tsunagu.controller.cluster.client import Kube, Lane, NotLeading
from tsunagu.controller.report.status import timestamp

logger = logging.getLogger(__name__)

REACHABLE = "Reachable"
CONNECTED = "Connected"
SECRET_MISSING = "SecretMissing"
KUBECONFIG_INVALID = "KubeconfigInvalid"
CLUSTER_UNREACHABLE = "ClusterUnreachable"
INVALID_SPEC = "InvalidSpec"
# The reason a region of a reachable member gives for taking no work.
NOT_PLACED_IN_MEMBERS = "NotPlacedInMembers"
NOT_PLACED_YET = (
    "gangs are not yet placed in member clusters (docs/clusters.md): this region takes no work"
)


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
        self, *, client: Kube, namespace: str, catalog: Catalog, timeout_seconds: float = 5.0
    ) -> None:
        # The hub's client: the Secrets are read, and the Cluster statuses written, through it.
        self.client = client
        self.namespace = namespace
        self.catalog = catalog
        self.timeout_seconds = timeout_seconds
        self.members: dict[str, MemberState] = {}

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

    def deleted(self, name: str) -> MemberState | None:
        self.catalog.member_verdicts.pop(name, None)
        return self.members.pop(name, None)

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
                member = Kube(
                    configuration_from(kubeconfig), pool_size=4,
                    connections={Lane.GANGS: 8, Lane.REPORTS: 4},
                )  # fmt: skip
            except Exception as error:  # a bad kubeconfig fails in many ways, each an answer
                text = f"Secret {self.namespace}/{spec.secret_name} key {spec.secret_key}"
                self._verdict(name, state, KUBECONFIG_INVALID, f"{text}: {error}")
                return
            if state.client is not None:
                await state.client.close()
            state.client, state.digest = member, digest
        try:
            state.version = await state.client.server_version(within=self.timeout_seconds)
        except Exception as error:
            self._verdict(
                name, state, CLUSTER_UNREACHABLE, f"the API server did not answer: {error}"
            )
            return
        state.last_contact = time.time()
        self._verdict(name, state, CONNECTED, f"API server {state.version} answers")

    def _verdict(self, name: str, state: MemberState, reason: str, message: str) -> None:
        if (state.reason, state.message) != (reason, message):
            logger.info("cluster %s: %s: %s", name, reason, message)
        state.reason, state.message = reason, message
        self.catalog.member_verdicts[name] = (
            (NOT_PLACED_IN_MEMBERS, f"cluster {name}: {NOT_PLACED_YET}")
            if reason == CONNECTED
            else (reason, f"cluster {name} is not usable ({reason}): {message}")
        )

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
        for state in self.members.values():
            if state.client is not None:
                await state.client.close()
