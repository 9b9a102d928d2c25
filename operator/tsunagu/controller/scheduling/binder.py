"""The gang binder: creates a placed job's pods on their nodes (Bind mode; or creates, then binds
them with --create-pods-bound=false) and makes its headless Service, all or nothing. If any pod
cannot be created or bound, every pod this attempt created is deleted and the job is decided
again after a backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from tsunagu.api.conditions import RESIDENCY_VIOLATED, SCHEDULED, Reason
from tsunagu.api.members import split_node
from tsunagu.api.types import ClusterSpec, JobKey, PlacementMode, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.builders import build_pod, build_service, for_member, pod_name
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Conflict, Kube
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import (
    ConditionUpdate,
    placement_status,
    replica_counts,
    scheduled_condition,
    starting_condition,
)
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.scheduling.memberprep import MemberNotReady, MemberPreparer
from tsunagu.placement.engine import Decision

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BIND_BACKOFF_SECONDS = 60.0
ROLLBACK_WAIT_SECONDS = 60.0


@dataclass
class Attempt:
    """One try at a gang: the cluster it goes to and the pods it created (for a rollback)."""

    connection: ClusterConnection
    pods: list[str] = field(default_factory=list)


class GangBinder:
    def __init__(
        self,
        *,
        client: Kube,
        clusters: ClusterSet,
        member_spec: Callable[[str], ClusterSpec | None],
        catalog: Catalog,
        jobs: JobTracker,
        statuses: StatusBook,
        events: EventRecorder,
        assumed: AssumeCache,
        inflight: InFlight,
        concurrency: int,
        create_pods_bound: bool = True,
        gang_tolerations: Sequence[Mapping[str, str]] = (),
        on_bound: Callable[[JobKey], None],
        on_rolled_back: Callable[[JobKey], Awaitable[None]],
    ) -> None:
        self.client = client
        self.clusters = clusters
        self.members = MemberPreparer(client, member_spec)
        self.catalog = catalog
        self.jobs = jobs
        self.statuses = statuses
        self.events = events
        self.assumed = assumed
        self.inflight = inflight
        self.slots = asyncio.Semaphore(concurrency)
        self.create_pods_bound = create_pods_bound
        self.gang_tolerations = tuple(gang_tolerations)
        # The lifecycle looks at the job after its gang is bound, or after it was rolled back.
        self.on_bound = on_bound
        self.on_rolled_back = on_rolled_back

    async def bind(self, job: TrainingJobSpec, decision: Decision, decided_at: float) -> None:
        started = time.perf_counter()
        attempt = Attempt(self.clusters.hub)
        try:
            async with self.slots:
                await self._create_and_bind(job, decision, attempt)
        except Exception as error:
            await self._roll_back(job, error, attempt)
            return
        metrics.BIND_SECONDS.observe(time.perf_counter() - started)
        self.jobs.bind_failures.pop(job.key, None)
        self.jobs.just_bound[job.key] = time.monotonic()
        self._report_placed(job, decision, decided_at, attempt.connection.member)
        self.inflight.discard(job.key)
        # Soon, not now: by then the pods coming up are one status write, not one each.
        self.on_bound(job.key)

    async def _create_and_bind(
        self, job: TrainingJobSpec, decision: Decision, attempt: Attempt
    ) -> None:
        """Creates and binds the gang in the region's cluster; `attempt` collects the pods this
        attempt owns (for a rollback)."""
        body = self.jobs.body(job.key)
        if body is None:
            raise RuntimeError("the TrainingJob was deleted before its pods were created")
        assert decision.region is not None
        dataset = self.catalog.dataset(job.namespace, job.dataset_ref)
        region = self.catalog.regions.get(decision.region)
        member = region.cluster if region is not None else None
        connection = self.clusters.get(member)
        if connection is None:
            raise MemberNotReady(f"cluster {member} is not connected")
        attempt.connection = connection
        adapt: Callable[[dict[str, Any]], dict[str, Any]] = lambda built: built  # noqa: E731
        if member is not None:
            anchor_uid = await self.members.prepare(job, body, connection, member)
            adapt = lambda built: for_member(built, body, anchor_uid)  # noqa: E731
        selector = dict(region.node_selector) if region and region.node_selector else None
        bind = job.placement.mode is PlacementMode.Bind
        bound_at_creation = bind and self.create_pods_bound
        nodes = [split_node(node)[1] for node in decision.nodes]
        pods = [
            adapt(build_pod(
                job, body, rank, decision.region, dataset, selector, self.gang_tolerations,
                node=node if bound_at_creation else None,
            ))
            for rank, node in enumerate(nodes)
        ]  # fmt: skip
        client = connection.client
        # Each pod's answer: None when it is on its node already, else the pod still unbound.
        unbound = await _gather_all(self._create_pod(client, pod, attempt) for pod in pods)
        if bind:
            await _all(
                client.bind_pod(job.namespace, pod_name(job.name, rank), node)
                for rank, node in enumerate(nodes)
                if unbound[rank]
            )
        # After the pods, not before: kube-controller-manager's endpoints controllers look
        # through every pod of the namespace on each event of a pod the Service selects. Created
        # now, the Service sees its rank-0 pod bound already; created first, it would also see it
        # created and bound, two more looks through thousands of pods per gang during a burst.
        service = adapt(build_service(job, body))
        if not await client.create_service(service):
            await self._check_service_is_ours(client, service)

    async def _check_service_is_ours(self, client: Kube, service: dict[str, Any]) -> None:
        """A Service of the job's name that another owner made would send MASTER_ADDR to the
        wrong pods: the gang is not started beside it."""
        metadata = service["metadata"]
        existing = await client.call(client.read_service, metadata["namespace"], metadata["name"])
        owner = metadata["ownerReferences"][0]["uid"]
        owners = [
            r.get("uid")
            for r in existing["metadata"].get("ownerReferences") or []
            if r.get("controller")
        ]
        if owners != [owner]:
            raise RuntimeError(f"Service {metadata['name']} exists and is not this job's")

    async def _create_pod(self, client: Kube, pod: dict[str, Any], attempt: Attempt) -> bool:
        """Creates the pod; True when it still needs binding (created without a node)."""
        name = pod["metadata"]["name"]
        wanted = pod["spec"].get("nodeName")
        ours = attempt.pods
        try:
            await client.create_pod(pod)
            ours.append(name)
            return wanted is None
        except Conflict:
            # A pod of this name exists: only ours may be reused (e.g. after a crash), unbound
            # or already on the node chosen for it now.
            existing = await client.call(
                client.read_pod, pod["metadata"]["namespace"], pod["metadata"]["name"]
            )
            owner = pod["metadata"]["ownerReferences"][0]["uid"]
            owners = [r.get("uid") for r in existing["metadata"].get("ownerReferences") or []]
            node = existing["spec"].get("nodeName")
            if owner not in owners or (node and node != wanted):
                raise RuntimeError(f"pod {name} exists already") from None
            ours.append(name)
            return not node

    async def _roll_back(
        self, job: TrainingJobSpec, error: BaseException, attempt: Attempt
    ) -> None:
        """Deletes the pods this attempt created (never a pod of someone else's with the same
        name). A refusal of the API server is the answer to this spec: the job waits for an
        edit; anything else is tried again after a backoff."""
        logger.warning("gang of %s/%s rolled back: %s", job.namespace, job.name, error)
        metrics.BIND_FAILURES.inc()
        refusal = refusal_message(error)
        member = attempt.connection.member
        if member is not None and _forbidden(error):
            # The member does not let the hub's identity do this now (its role lacks a verb, a
            # quota is full, the namespace is going): no verdict on the job's spec; tried again
            # after the backoff, said in the Event.
            error = MemberNotReady(
                f"cluster {member} refused the gang's objects ({refusal}); if its role is "
                "short of a verb, grant what the chart's member mode grants (docs/clusters.md)"
            )
            refusal = None
        failures = self.jobs.bind_failures.get(job.key, 0) + 1
        self.jobs.bind_failures[job.key] = failures
        self.jobs.not_before[job.key] = time.time() + min(2.0**failures, MAX_BIND_BACKOFF_SECONDS)
        client, ours = attempt.connection.client, attempt.pods
        await asyncio.gather(
            *(client.delete_pod(job.namespace, name) for name in ours), return_exceptions=True
        )
        # The next attempt reuses the pod names: it must not start while the old pods exist.
        await self._wait_until_gone(client, job.namespace, ours)
        self.assumed.forget(job.key)
        self.inflight.discard(job.key)
        if refusal is not None:
            self._report_refused(job, refusal)
        else:
            self.events.job_event(
                job.key, "Warning", "BindFailed", f"gang rolled back, will retry: {error}"
            )
        await self.on_rolled_back(job.key)

    def _report_refused(self, job: TrainingJobSpec, message: str) -> None:
        generation = self.jobs.generation(job.key)
        self.jobs.refused[job.key] = generation
        self.jobs.not_before.pop(job.key, None)
        self.jobs.bind_failures.pop(job.key, None)
        text = f"the API server refused the gang's objects: {message}"
        reason = str(Reason.InvalidSpec)
        self.statuses.update(
            job.key, generation, time.time(),
            conditions=[ConditionUpdate(SCHEDULED, False, reason, text)],
        )  # fmt: skip
        self.events.job_event(job.key, "Warning", reason, text)

    async def _wait_until_gone(self, client: Kube, namespace: str, names: list[str]) -> None:
        deadline = time.monotonic() + ROLLBACK_WAIT_SECONDS
        remaining = list(names)
        while remaining and time.monotonic() < deadline:
            exists = await asyncio.gather(
                *(client.call(client.pod_exists, namespace, name) for name in remaining),
                return_exceptions=True,
            )
            remaining = [name for name, found in zip(remaining, exists, strict=True) if found]
            if remaining:
                await asyncio.sleep(0.5)

    def _report_placed(
        self, job: TrainingJobSpec, decision: Decision, now: float, member: str | None
    ) -> None:
        condition = scheduled_condition(decision)
        if member is not None:
            where = f"region {decision.region}"
            message = condition.message.replace(where, f"{where} (cluster {member})", 1)
            if message == condition.message:
                message = f"{message} (cluster {member})"
            condition = replace(condition, message=message)
        conditions = [condition, starting_condition(job.replicas)]
        if self.statuses.condition(job.key, RESIDENCY_VIOLATED) is not None:
            where = f"placed in {decision.region}, which the dataset allows"
            reason = str(Reason.WithinResidency)
            conditions.append(ConditionUpdate(RESIDENCY_VIOLATED, False, reason, where))
        self.statuses.update(
            job.key,
            self.jobs.generation(job.key),
            now,
            conditions=conditions,
            fields={
                "region": decision.region,
                "placement": placement_status(decision, now),
                **replica_counts(job.replicas),
                **({"cluster": member} if member is not None else {}),
            },
            remove=() if member is not None else ("cluster",),
        )
        region = decision.region or ""
        metrics.PLACEMENTS.labels(region=region, outcome=str(Reason.Placed)).inc()
        if decision.predicted_loss is not None:
            metrics.PREDICTED_LOSS.labels(region=region).observe(decision.predicted_loss)
        self.events.job_event(job.key, "Normal", str(Reason.Placed), condition.message)


# 4xx answers that are not about this spec: an existing object (409, handled where it is
# created), a pod gone meanwhile (404) or too many requests (429) are tried again.
_RETRIED_4XX = frozenset({404, 409, 429})


def _forbidden(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status in (401, 403)


def refusal_message(error: BaseException) -> str | None:
    """The API server's own message (it names the field) when `error` is a 4xx refusing the
    request for what it says; None for anything worth trying again."""
    if not isinstance(error, ApiException) or error.status is None:
        return None
    if not 400 <= error.status < 500 or error.status in _RETRIED_4XX:
        return None
    try:
        message = json.loads(error.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        message = error.body or error.reason or ""
    return f"{error.status} {error.reason}: {message}"


async def _all(calls: Iterable[Awaitable[Any]]) -> None:
    """Like gather, but lets every call finish before raising the first error: a rollback must
    know every pod that was created."""
    await _gather_all(calls)


async def _gather_all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """The answers of every call, after all of them finished; the first error is raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]
