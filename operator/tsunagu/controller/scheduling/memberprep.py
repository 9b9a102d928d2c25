"""Before a gang is made in a member cluster: the hub job's finalizer (its deletion then waits
for the member's objects), the job's namespace in the member (created when its Cluster allows),
and the job's anchor ConfigMap there, which owns the gang's objects (api.members)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from tsunagu.api.members import HUB_JOB_UID_LABEL, MEMBER_OBJECTS_FINALIZER
from tsunagu.api.types import ClusterSpec, TrainingJobSpec
from tsunagu.controller.builders import build_anchor
from tsunagu.controller.cluster.client import Conflict, Kube
from tsunagu.controller.cluster.connection import ClusterConnection

FINALIZER_ATTEMPTS = 3


class MemberNotReady(RuntimeError):
    """The gang cannot be made in the member now (its namespace is missing, an earlier job's
    objects are still there, the member refused): tried again after the backoff, said in the
    Event."""


class MemberPreparer:
    def __init__(self, hub: Kube, member_spec: Callable[[str], ClusterSpec | None]) -> None:
        # The hub's client: the TrainingJob's finalizer is written through it.
        self.hub = hub
        self.member_spec = member_spec

    async def prepare(
        self, job: TrainingJobSpec, body: Mapping[str, Any], connection: ClusterConnection,
        member: str,
    ) -> str:  # fmt: skip
        """Before anything is made in a member: the hub job's finalizer (its deletion then
        waits for the member's objects), the namespace, the job's anchor. Returns the anchor's
        uid."""
        await self._add_finalizer(job, body)
        anchor = build_anchor(job, body)
        client = connection.client
        for _ in range(2):
            try:
                return str((await client.create_config_map(anchor))["metadata"]["uid"])
            except Conflict:
                existing = await client.call(
                    client.read_config_map, job.namespace, anchor["metadata"]["name"]
                )
                labels = existing["metadata"].get("labels") or {}
                if existing["metadata"].get("deletionTimestamp"):
                    raise MemberNotReady(
                        f"the job's earlier objects in cluster {member} are still being removed"
                    ) from None
                if labels.get(HUB_JOB_UID_LABEL) == body["metadata"]["uid"]:
                    return str(existing["metadata"]["uid"])
                # An earlier job of this name: its objects go with its anchor.
                await client.delete_config_map(
                    job.namespace, anchor["metadata"]["name"], existing["metadata"]["uid"]
                )
                raise MemberNotReady(
                    f"objects of an earlier job {job.name} are still being removed from "
                    f"cluster {member}"
                ) from None
            except ApiException as error:
                if error.status != 404:
                    raise
                spec = self.member_spec(member)
                if spec is None or not spec.create_namespaces:
                    raise MemberNotReady(
                        f"namespace {job.namespace} does not exist in cluster {member} "
                        f"(Cluster {member} has spec.createNamespaces false)"
                    ) from None
                await client.create_namespace(job.namespace)
        raise MemberNotReady(f"namespace {job.namespace} could not be made in cluster {member}")

    async def _add_finalizer(self, job: TrainingJobSpec, body: Mapping[str, Any]) -> None:
        """The hub job's finalizer, added to the finalizers it has at the version read (a
        concurrent change answers 409 and is read again)."""
        if MEMBER_OBJECTS_FINALIZER in (body["metadata"].get("finalizers") or ()):
            return
        for _ in range(FINALIZER_ATTEMPTS):
            current = await self.hub.call(self.hub.read_training_job, job.namespace, job.name)
            metadata = current["metadata"]
            if metadata.get("uid") != body["metadata"]["uid"] or metadata.get("deletionTimestamp"):
                raise RuntimeError("the TrainingJob was deleted before its pods were created")
            finalizers = list(metadata.get("finalizers") or [])
            if MEMBER_OBJECTS_FINALIZER in finalizers:
                return
            try:
                await self.hub.patch_job_metadata(
                    job.namespace, job.name,
                    {"finalizers": [*finalizers, MEMBER_OBJECTS_FINALIZER],
                     "resourceVersion": metadata["resourceVersion"]},
                )  # fmt: skip
                return
            except Conflict:
                continue
        raise RuntimeError("the TrainingJob's finalizer could not be added (it kept changing)")
