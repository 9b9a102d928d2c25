"""The job state machine: keeps a TrainingJob's status true to its pods — Running, Finished,
restarts within `backoffLimit`, gangs broken by a crash or a lost node — and puts jobs without
pods in the queue (after a bind backoff, if one is running).

It is level-triggered: `reconcile` looks at what exists now (the job, its pods, the nodes) and
acts, so it is safe to call on any event, as often as needed, and after an operator restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from tsunagu.api.conditions import FINISHED, RUNNING, SCHEDULED, Reason
from tsunagu.api.members import anchor_name
from tsunagu.api.names import TRAINING_JOB_KIND
from tsunagu.api.types import JobKey, PlacementMode, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.builders import build_service, for_member
from tsunagu.controller.cluster.connection import ClusterSet
from tsunagu.controller.cluster.view import JobPod
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.memberjobs import LEFT_IN_CLUSTER, MemberJobs
from tsunagu.controller.lifecycle.memberobjects import MemberObjects, being_deleted
from tsunagu.controller.lifecycle.members import MemberClusters
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import (
    ConditionUpdate,
    replica_counts,
    starting_condition,
    timestamp,
)
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.scheduling.queue import SchedulingQueue
from tsunagu.controller.tasks import TaskGroup

logger = logging.getLogger(__name__)


def is_true(condition: dict[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


# Pod events of one gang arrive in bursts (8 pods × created, bound, running): one look suffices.
# A quarter second gathers a gang's pods coming up into one status write, not one per pod.
RECONCILE_DELAY_SECONDS = 0.25
# How long after binding a gang its pods may still be missing from the watch.
WATCH_LAG_SECONDS = 30.0
ALL_SUCCEEDED = "every replica succeeded"
# Like the node-lifecycle controller, which evicts pods from a NotReady node only after their
# 300 s toleration of node.kubernetes.io/not-ready: a node that blinks does not kill a gang.
DEFAULT_NODE_LOST_GRACE_SECONDS = 300.0


class JobLifecycle:
    def __init__(
        self,
        *,
        jobs: JobTracker,
        clusters: ClusterSet,
        members: MemberClusters,
        member_objects: MemberObjects,
        queue: SchedulingQueue,
        statuses: StatusBook,
        events: EventRecorder,
        assumed: AssumeCache,
        inflight: InFlight,
        tasks: TaskGroup,
        node_lost_grace_seconds: float = DEFAULT_NODE_LOST_GRACE_SECONDS,
    ) -> None:
        self.node_lost_grace_seconds = node_lost_grace_seconds
        self.jobs = jobs
        self.clusters = clusters
        self.members = members
        self.member_objects = member_objects
        self.member_jobs = MemberJobs(
            clusters=clusters, members=members, member_objects=member_objects,
            statuses=statuses, events=events, look_again=self.reconcile_soon,
        )  # fmt: skip
        self.queue = queue
        self.statuses = statuses
        self.events = events
        self.assumed = assumed
        self.inflight = inflight
        self.tasks = tasks

    def reconcile_soon(self, key: JobKey) -> None:
        """Reconciles the job shortly, once for however many events arrive meanwhile."""
        if key in self.jobs.dirty:
            return
        self.jobs.dirty.add(key)

        async def later() -> None:
            await asyncio.sleep(RECONCILE_DELAY_SECONDS)
            self.jobs.dirty.discard(key)
            await self.reconcile(key)

        self.tasks.spawn(later(), name=f"reconcile {key[0]}/{key[1]}")

    async def reconcile(self, key: JobKey) -> None:
        async with self.jobs.lock(key):
            try:
                await self._reconcile(key)
            except Exception:
                # Counted and logged with the job's key; its next event or timer looks again.
                metrics.INTERNAL_ERRORS.labels(loop="lifecycle").inc()
                logger.exception("reconciling %s/%s failed", *key)

    async def _reconcile(self, key: JobKey) -> None:
        tracked = self.jobs.get(key)
        if tracked is None or key in self.inflight:
            return
        now = time.time()
        generation = tracked.generation
        body = self.jobs.body(key)
        if body is not None and being_deleted(body):
            # Its finalizer waits for what it has in member clusters.
            self.queue.remove(key)
            await self.member_objects.release(key, body, self._cluster_of(key))
            return
        job = tracked.spec
        if job is None:
            self.queue.remove(key)
            self._report_invalid(key, generation, now, tracked.invalid or "invalid spec")
            return
        finished = is_true(self.statuses.condition(key, FINISHED))
        verdict = await self.member_jobs.judge(
            job, generation, now, self.clusters.pods_of(key), body, finished
        )
        if verdict.requeue is not None:
            await self.requeue(job, generation, now, verdict.requeue, delete=False,
                               cause="cluster unreachable")  # fmt: skip
            self.statuses.update(key, generation, now, fields={LEFT_IN_CLUSTER: verdict.left_in})
            return
        if not verdict.act:
            # What its pods do in its member is not known now: nothing is decided on a stale
            # view, and the gang is never started a second time while the first may still run.
            return
        pods = verdict.pods
        ours = {name: pod for name, pod in pods.items() if pod.owner_uid == tracked.uid}
        if finished:
            self.queue.remove(key)
            # Finished: only the counts still move, as the remaining pods go away.
            self.statuses.update(key, generation, now, fields=_counts(job, ours.values()))
            return
        if any(_of_an_earlier_job(pod, tracked.uid) for pod in pods.values()):
            # Pods of an earlier job with the same name are still going away: wait for them.
            return
        self._report_strangers(key, {n for n, p in pods.items() if _stranger(p)})
        if not ours and self.member_jobs.may_be_unseen(key, body):
            return
        if not ours:
            self.jobs.teardown.discard(key)
            await self._no_pods(job, generation, now)
            return
        if key in self.jobs.teardown or any(pod.deleting for pod in ours.values()):
            return  # a rollback, restart or requeue is in progress; delete events call us again
        self.queue.remove(key)
        await self._with_pods(job, generation, now, list(ours.values()))

    def _cluster_of(self, key: JobKey) -> str | None:
        return self.member_jobs.placed_in(key)

    def _report_strangers(self, key: JobKey, names: set[str]) -> None:
        """Pods with the job's label that are not its own are ignored: said once, in an Event."""
        if not names:
            self.jobs.strangers.pop(key, None)
            return
        if self.jobs.strangers.get(key) == frozenset(names):
            return
        self.jobs.strangers[key] = frozenset(names)
        listed = ", ".join(sorted(names)[:10])
        self.events.job_event(
            key, "Warning", "ForeignPods",
            f"ignoring pods labelled as this job's that it does not own: {listed}",
        )  # fmt: skip

    def _report_invalid(self, key: JobKey, generation: int, now: float, message: str) -> None:
        previous = self.statuses.condition(key, SCHEDULED)
        self.statuses.update(
            key, generation, now,
            conditions=[ConditionUpdate(SCHEDULED, False, str(Reason.InvalidSpec), message)],
        )  # fmt: skip
        if previous is None or previous.get("message") != message:
            self.events.job_event(key, "Warning", str(Reason.InvalidSpec), message)

    async def _no_pods(self, job: TrainingJobSpec, generation: int, now: float) -> None:
        status = self.statuses.current(job.key)
        if status.get("region"):
            if self._events_still_coming(job.key):
                return  # bound a moment ago: the watch has not shown its pods yet
            # Placed before, but its pods are gone (deleted by someone, or never created).
            await self.requeue(job, generation, now, "the job's pods disappeared", delete=False)
            return
        self._enqueue(job, now)

    def _enqueue(self, job: TrainingJobSpec, now: float) -> None:
        if self.jobs.refused.get(job.key) == self.jobs.generation(job.key):
            return  # the API server refused this spec: it waits for an edit
        self.jobs.refused.pop(job.key, None)
        wait = self.jobs.not_before.get(job.key, 0.0) - now
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._enqueue_later, job.key)
            return
        self.jobs.not_before.pop(job.key, None)
        self.queue.add(job)

    def _enqueue_later(self, key: JobKey) -> None:
        self.jobs.not_before.pop(key, None)
        self.tasks.spawn(self.reconcile(key), name=f"requeue {key[0]}/{key[1]}")

    async def _with_pods(
        self, job: TrainingJobSpec, generation: int, now: float, pods: list[JobPod]
    ) -> None:
        status = self.statuses.current(job.key)
        counts = _counts(job, pods)
        ranks = {p.rank for p in pods}
        complete = ranks == set(range(job.replicas)) and len(pods) == job.replicas
        bound = all(p.node_name for p in pods)
        if counts["failedReplicas"] and all(
            p.refused_by_kubelet for p in pods if p.phase == "Failed"
        ):
            # The kubelet refused a pod at admission (another scheduler's pod got there first):
            # the gang is placed again, and it costs no restart of backoffLimit.
            refused = sorted(f"{p.name} ({p.reason})" for p in pods if p.refused_by_kubelet)
            why = f"the kubelet refused {', '.join(refused)}"
            await self.requeue(job, generation, now, why, cause="kubelet refused a pod")
        elif counts["failedReplicas"]:
            await self._restart_or_fail(job, generation, now, counts)
        elif complete and counts["succeededReplicas"] == job.replicas:
            self.statuses.update(
                job.key, generation, now,
                conditions=[
                    ConditionUpdate(FINISHED, True, str(Reason.Succeeded), ALL_SUCCEEDED),
                    ConditionUpdate(RUNNING, False, str(Reason.Succeeded), "the job has finished"),
                ],
                fields={**counts, "completionTime": status.get("completionTime") or timestamp(now)},
            )  # fmt: skip
            self.events.job_event(
                job.key, "Normal", str(Reason.Succeeded), "every replica succeeded"
            )
        elif not complete or (job.placement.mode is PlacementMode.Bind and not bound):
            if self._events_still_coming(job.key):
                return
            # Left half-made by a crash, or a pod was deleted: the gang is all-or-nothing.
            await self.requeue(job, generation, now, "the gang was incomplete")
        elif status.get("region") in job.placement.excluded_regions:
            # An edit after placement: the spec now excludes where the job runs.
            region = status.get("region")
            why = f"region {region} is now excluded"
            await self.requeue(job, generation, now, why, cause="region excluded")
        elif self._node_lost(job.key, pods, now):
            await self.requeue(job, generation, now, "a node of the job's region was lost")
        else:
            await self._running(job, generation, now, pods, counts, bound)

    def _node_lost(self, key: JobKey, pods: list[JobPod], now: float) -> bool:
        """A node of the gang is gone, or NotReady for longer than the grace period; within the
        grace, the job is looked at again when it ends."""
        grace = self.node_lost_grace_seconds
        left = float("inf")
        for pod in pods:
            view = self.clusters.view_of(pod.cluster)
            if pod.node_name and view is not None:
                left = min(left, view.node_lost_in(pod.node_name, grace, now))
        if left == 0:
            return True
        if left != float("inf"):
            asyncio.get_running_loop().call_later(left + 0.1, self.reconcile_soon, key)
        return False

    def _events_still_coming(self, key: JobKey) -> bool:
        bound_at = self.jobs.just_bound.get(key)
        if bound_at is None:
            return False
        left = bound_at + WATCH_LAG_SECONDS - time.monotonic()
        if left > 0:
            # Look again when the grace ends, in case no further event arrives.
            asyncio.get_running_loop().call_later(left, self.reconcile_soon, key)
            return True
        del self.jobs.just_bound[key]
        return False

    async def _running(
        self,
        job: TrainingJobSpec,
        generation: int,
        now: float,
        pods: list[JobPod],
        counts: dict[str, int],
        bound: bool,
    ) -> None:
        status = self.statuses.current(job.key)
        fields: dict[str, Any] = dict(counts)
        conditions = []
        if not status.get("region"):
            # Bound before a crash, status never written: adopt the gang as it is. Its Service
            # comes after the pods (see the binder) and may not have been made yet.
            body = self.jobs.body(job.key)
            member = next((p.cluster for p in pods if p.cluster), None)
            if body is not None:
                await self._adopt_service(job, body, member)
            region = next((p.region for p in pods if p.region), None)
            fields["region"] = region
            if member is not None:
                fields["cluster"] = member
            conditions.append(
                ConditionUpdate(
                    SCHEDULED, True, str(Reason.Placed), f"adopted the gang in {region}"
                )
            )
        if bound:
            self.assumed.forget(job.key)
            self.jobs.just_bound.pop(job.key, None)
        if counts["runningReplicas"] == job.replicas:
            conditions.append(
                ConditionUpdate(RUNNING, True, str(Reason.PodsRunning), "every replica runs")
            )
            fields["startTime"] = status.get("startTime") or timestamp(now)
            was_running = is_true(self.statuses.condition(job.key, RUNNING))
        else:
            conditions.append(starting_condition(job.replicas - counts["runningReplicas"]))
            was_running = True
        self.statuses.update(job.key, generation, now, conditions=conditions, fields=fields)
        if not was_running:
            self.events.job_event(job.key, "Normal", str(Reason.PodsRunning), "every replica runs")

    async def _adopt_service(
        self, job: TrainingJobSpec, body: dict[str, Any], member: str | None
    ) -> None:
        connection = self.clusters.get(member)
        if connection is None:
            return
        service = build_service(job, body)
        if member is not None:
            client = connection.client
            anchor = await client.call(client.read_config_map, job.namespace, anchor_name(job.name))
            service = for_member(service, body, str(anchor["metadata"]["uid"]))
        await connection.client.create_service(service)

    async def _restart_or_fail(
        self, job: TrainingJobSpec, generation: int, now: float, counts: dict[str, int]
    ) -> None:
        restarts = int(self.statuses.current(job.key).get("restarts") or 0)
        if restarts < job.backoff_limit:
            limit = job.backoff_limit
            message = f"a replica failed; recreating the gang (restart {restarts + 1} of {limit})"
            self.statuses.update(
                job.key, generation, now,
                conditions=[
                    ConditionUpdate(SCHEDULED, False, str(Reason.Restarting), message),
                    ConditionUpdate(RUNNING, False, str(Reason.Restarting), message),
                ],
                fields={**counts, "restarts": restarts + 1},
                remove=("region", "cluster"),
            )  # fmt: skip
            self.events.job_event(job.key, "Warning", str(Reason.Restarting), message)
        else:
            message = f"a replica failed and backoffLimit ({job.backoff_limit}) is reached"
            self.statuses.update(
                job.key, generation, now,
                conditions=[
                    ConditionUpdate(FINISHED, True, str(Reason.Failed), message),
                    ConditionUpdate(RUNNING, False, str(Reason.Failed), message),
                ],
                fields={**counts, "completionTime": timestamp(now)},
            )  # fmt: skip
            self.events.job_event(job.key, "Warning", str(Reason.Failed), message)
        await self._delete_gang(job, only_live=restarts >= job.backoff_limit)

    async def requeue(
        self,
        job: TrainingJobSpec,
        generation: int,
        now: float,
        why: str,
        delete: bool = True,
        cause: str | None = None,
    ) -> None:
        """Back to the queue, its pods deleted (unless `delete` is False); `why` is said in the
        condition and Event, `cause` (a few fixed words; `why` when not given) labels the
        metric."""
        metrics.REQUEUES.labels(reason=cause or why).inc()
        message = f"requeued: {why}"
        self.statuses.update(
            job.key, generation, now,
            conditions=[
                ConditionUpdate(SCHEDULED, False, str(Reason.Requeued), message),
                ConditionUpdate(RUNNING, False, str(Reason.Requeued), message),
            ],
            remove=("region", "cluster", "startTime"),
        )  # fmt: skip
        self.events.job_event(job.key, "Warning", str(Reason.Requeued), message)
        self.assumed.forget(job.key)
        if delete:
            await self._delete_gang(job)
        else:
            self._enqueue(job, now)

    async def _delete_gang(self, job: TrainingJobSpec, only_live: bool = False) -> None:
        self.jobs.teardown.add(job.key)
        tracked = self.jobs.get(job.key)
        uid = tracked.uid if tracked is not None else None
        # Only the job's own pods: one that merely carries its label is someone else's.
        pods = [p for p in self.clusters.pods_of(job.key).values() if p.owner_uid == uid]
        targets = [p for p in pods if not (only_live and p.phase in ("Succeeded", "Failed"))]
        deletes = []
        for pod in targets:
            connection = self.clusters.get(pod.cluster)
            if connection is not None:
                deletes.append(connection.client.delete_pod(job.namespace, pod.name))
        await asyncio.gather(*deletes, return_exceptions=True)


def _stranger(pod: JobPod) -> bool:
    """Not made by any TrainingJob: by hand, or by another controller."""
    return pod.owner_kind != TRAINING_JOB_KIND


def _of_an_earlier_job(pod: JobPod, uid: str | None) -> bool:
    return pod.owner_kind == TRAINING_JOB_KIND and pod.owner_uid != uid


def _counts(job: TrainingJobSpec, pods: Iterable[JobPod]) -> dict[str, int]:
    """Replica counts of the job's own pods as they are now (a pod being deleted runs no more)."""
    live = [p for p in pods if not p.deleting]
    return replica_counts(
        job.replicas,
        running=sum(p.phase == "Running" for p in live),
        succeeded=sum(p.phase == "Succeeded" for p in pods),
        failed=sum(p.phase == "Failed" for p in pods),
    )
