"""What a hub TrainingJob leaves in member clusters: removed when the job is deleted (its
finalizer holds the deletion until then) and when the hub no longer knows the job (an anchor
whose hub uid is no TrainingJob: the finalizer removed by hand, the job deleted while the
member was away).

Each job's objects in a member hang off its anchor ConfigMap (api.members): deleting the anchor
is enough, the member's garbage collector removes its pods and Service.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from tsunagu.api.members import (
    HUB_JOB_UID_LABEL,
    HUB_NAMESPACE_LABEL,
    MEMBER_OBJECTS_FINALIZER,
    anchor_name,
)
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.catalog import MEMBER_CONNECTED
from tsunagu.controller.cluster.client import Conflict, Kube, NotLeading
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.lifecycle.members import MemberClusters

logger = logging.getLogger(__name__)

FINALIZER_ATTEMPTS = 3


def being_deleted(body: Mapping[str, Any] | None) -> bool:
    """Deleted on the hub while its finalizer still holds it: its member objects go first."""
    if body is None:
        return False
    metadata = body.get("metadata") or {}
    finalizers = metadata.get("finalizers") or ()
    return bool(metadata.get("deletionTimestamp")) and MEMBER_OBJECTS_FINALIZER in finalizers


class MemberObjects:
    def __init__(self, *, hub: Kube, clusters: ClusterSet, members: MemberClusters) -> None:
        self.hub = hub
        self.clusters = clusters
        self.members = members

    async def release(self, key: JobKey, body: Mapping[str, Any], placed_in: str | None) -> bool:
        """Deletes the job's anchor in every member that answers, then its finalizer; True once
        the finalizer is gone. The member it was placed in must answer (else the deletion waits
        for it, and is tried again when it does): a Cluster deleted meanwhile is no reason to
        wait."""
        uid = str(body["metadata"]["uid"])
        if placed_in is not None and placed_in in self.members.members:
            reason, message = self.members.usable(placed_in)
            if reason != MEMBER_CONNECTED:
                logger.info("deletion of %s/%s waits for cluster %s (%s)", *key, placed_in, message)
                return False
        for connection in list(self.clusters.members.values()):
            if not connection.current and connection.name != placed_in:
                continue  # not reachable now; the orphan sweep removes it when it is
            try:
                await _delete_anchor(connection, key, uid)
            except Exception as error:
                if connection.name == placed_in:
                    logger.info("deletion of %s/%s waits for cluster %s: %s",
                                *key, placed_in, error)  # fmt: skip
                    return False
                logger.warning("cluster %s: %s/%s not cleaned up: %s",
                               connection.name, *key, error)  # fmt: skip
        return await self._remove_finalizer(key, uid)

    async def remove_from(self, member: str, key: JobKey, uid: str) -> None:
        """Deletes the job's anchor (and so its gang) in one member."""
        connection = self.clusters.members.get(member)
        if connection is not None:
            await _delete_anchor(connection, key, uid)

    async def _remove_finalizer(self, key: JobKey, uid: str) -> bool:
        namespace, name = key
        for _ in range(FINALIZER_ATTEMPTS):
            try:
                current = await self.hub.call(self.hub.read_training_job, namespace, name)
            except ApiException as error:
                if error.status == 404:
                    return True
                raise
            metadata = current["metadata"]
            finalizers = list(metadata.get("finalizers") or [])
            if metadata.get("uid") != uid or MEMBER_OBJECTS_FINALIZER not in finalizers:
                return True
            kept = [f for f in finalizers if f != MEMBER_OBJECTS_FINALIZER]
            try:
                await self.hub.patch_job_metadata(
                    namespace, name,
                    {"finalizers": kept or None, "resourceVersion": metadata["resourceVersion"]},
                )  # fmt: skip
                logger.info("%s/%s: its objects in member clusters are gone", namespace, name)
                return True
            except Conflict:
                continue
        return False

    async def sweep(self, connection: ClusterConnection, known_uids: Iterable[str]) -> int:
        """Deletes the anchors in a member whose hub job is no TrainingJob the hub knows;
        returns how many. Run by the leader once its lists are complete."""
        client = connection.client
        known = set(known_uids)
        anchors = await client.call(client.list_config_maps, HUB_JOB_UID_LABEL)
        removed = 0
        for anchor in anchors:
            metadata = anchor.get("metadata") or {}
            labels = metadata.get("labels") or {}
            if labels.get(HUB_JOB_UID_LABEL) in known:
                continue
            if labels.get(HUB_NAMESPACE_LABEL) != metadata.get("namespace"):
                continue  # not one of ours: our anchors live in the hub job's namespace
            try:
                await client.delete_config_map(
                    metadata["namespace"], metadata["name"], metadata.get("uid")
                )
            except NotLeading:
                return removed
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="member-objects").inc()
                where = f"{metadata.get('namespace')}/{metadata.get('name')}"
                logger.exception("deleting %s in cluster %s failed", where, connection.name)
                continue
            removed += 1
            logger.info(
                "cluster %s: removed %s/%s, whose TrainingJob is gone",
                connection.name, metadata.get("namespace"), metadata.get("name"),
            )  # fmt: skip
        return removed


async def _delete_anchor(connection: ClusterConnection, key: JobKey, uid: str) -> None:
    """The job's anchor in one member, if it is this job's (its uid label)."""
    client = connection.client
    namespace, name = key
    try:
        anchor = await client.call(client.read_config_map, namespace, anchor_name(name))
    except ApiException as error:
        if error.status == 404:
            return
        raise
    metadata = anchor["metadata"]
    if (metadata.get("labels") or {}).get(HUB_JOB_UID_LABEL) != uid:
        return
    await client.delete_config_map(namespace, metadata["name"], metadata.get("uid"))
