"""A TrainingJob's gang in a member cluster, judged before the job state machine acts on it:
whether the member can be acted on now (ClusterReachable), what `onClusterUnreachable` asks
when it cannot, and the copy a job left in a member it was placed again away from.

Nothing is decided on a member's stale view: while the member the gang is in cannot be
reached, the job is left as it is (never started a second time), unless its policy accepts a
second copy after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tsunagu.api.conditions import CLUSTER_REACHABLE, Reason
from tsunagu.api.members import MEMBER_OBJECTS_FINALIZER
from tsunagu.api.types import JobKey, TrainingJobSpec, UnreachableAction
from tsunagu.controller.cluster.connection import ClusterSet
from tsunagu.controller.cluster.view import JobPod
from tsunagu.controller.lifecycle.memberobjects import MemberObjects
from tsunagu.controller.lifecycle.members import SYNCING, MemberClusters
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import ConditionUpdate
from tsunagu.controller.report.statusbook import StatusBook

logger = logging.getLogger(__name__)

LEFT_IN_CLUSTER = "leftInCluster"


@dataclass(frozen=True, slots=True)
class MemberVerdict:
    """`act`: the state machine may act on `pods` (the job's pods it may trust); `requeue`: the
    policy asks for the job to be placed again, leaving its copy in `left_in`."""

    act: bool
    pods: dict[str, JobPod]
    requeue: str | None = None
    left_in: str | None = None


class MemberJobs:
    def __init__(
        self,
        *,
        clusters: ClusterSet,
        members: MemberClusters,
        member_objects: MemberObjects,
        statuses: StatusBook,
        events: EventRecorder,
        look_again: Callable[[JobKey], None],
    ) -> None:
        self.clusters = clusters
        self.members = members
        self.member_objects = member_objects
        self.statuses = statuses
        self.events = events
        # Asks the lifecycle to look at the job again (when a grace period ends).
        self.look_again = look_again

    def placed_in(self, key: JobKey) -> str | None:
        """The member the job was placed in, as its status says; None: the hub."""
        cluster = self.statuses.current(key).get("cluster")
        return str(cluster) if cluster else None

    async def judge(
        self,
        job: TrainingJobSpec,
        generation: int,
        now: float,
        pods: dict[str, JobPod],
        body: Mapping[str, Any] | None,
        finished: bool,
    ) -> MemberVerdict:
        key = job.key
        left_in = self.statuses.current(key).get(LEFT_IN_CLUSTER)
        if left_in:
            pods = await self._clear_left_behind(job, generation, now, pods, str(left_in), body)
        member = self.placed_in(key) or next((p.cluster for p in pods.values() if p.cluster), None)
        if member and not finished:
            reason, message = self.members.usable(member)
            if reason == SYNCING:
                return MemberVerdict(False, pods)  # listed in a moment: looked at again then
            reachable = reason == str(Reason.Connected)
            self._report(key, generation, now, member, reason, message, reachable)
            if not reachable:
                return MemberVerdict(False, pods, *self._policy(job, now, member, message))
        return MemberVerdict(True, pods)

    def may_be_unseen(self, key: JobKey, body: Mapping[str, Any] | None) -> bool:
        """A job without pods that held objects in a member (its finalizer) while a connected
        member's view is not current: a gang bound there before a restart, its status not yet
        written, may be in it. Such a job is not started a second time meanwhile."""
        if self.statuses.current(key).get(LEFT_IN_CLUSTER) or not _holds_finalizer(body):
            return False
        return not all(connection.current for connection in self.clusters.members.values())

    def _report(
        self, key: JobKey, generation: int, now: float, member: str, reason: str, message: str,
        reachable: bool,
    ) -> None:  # fmt: skip
        previous = self.statuses.condition(key, CLUSTER_REACHABLE)
        if previous is None and reachable:
            return  # said only once it was ever unreachable: most jobs never see it
        text = f"cluster {member}: {message}"
        self.statuses.update(
            key, generation, now,
            conditions=[ConditionUpdate(CLUSTER_REACHABLE, reachable, reason, text)],
        )  # fmt: skip
        if previous is None or previous.get("reason") != reason:
            self.events.job_event(key, "Normal" if reachable else "Warning", reason, text)

    def _policy(
        self, job: TrainingJobSpec, now: float, member: str, message: str
    ) -> tuple[str | None, str | None]:
        """(why, member) when onClusterUnreachable Requeue's grace has run out; else (None,
        None), with a look scheduled for when it runs out."""
        policy = job.placement
        if policy.on_cluster_unreachable is not UnreachableAction.Requeue:
            return None, None
        condition = self.statuses.condition(job.key, CLUSTER_REACHABLE) or {}
        since = _seconds(condition.get("lastTransitionTime"), now)
        left = since + policy.cluster_unreachable_grace_seconds - now
        if left > 0:
            asyncio.get_running_loop().call_later(left + 0.1, self.look_again, job.key)
            return None, None
        why = (
            f"cluster {member} unreachable for {now - since:.0f} s ({message}); placed again as "
            "onClusterUnreachable is Requeue: the copy there may still run until it answers"
        )
        return why, member

    async def _clear_left_behind(
        self, job: TrainingJobSpec, generation: int, now: float, pods: dict[str, JobPod],
        left_in: str, body: Mapping[str, Any] | None,
    ) -> dict[str, JobPod]:  # fmt: skip
        """The copy left in a member: never counted; removed once the member answers (its
        anchor deleted), then `leftInCluster` cleared."""
        kept = {name: pod for name, pod in pods.items() if pod.cluster != left_in}
        reason, _ = self.members.usable(left_in)
        if reason != str(Reason.Connected) and left_in in self.members.members:
            return kept
        if body is not None and len(kept) < len(pods):
            await self.member_objects.remove_from(left_in, job.key, str(body["metadata"]["uid"]))
            logger.info("%s/%s: removing the copy left in cluster %s", *job.key, left_in)
            return kept
        self.statuses.update(job.key, generation, now, remove=(LEFT_IN_CLUSTER,))
        return kept


def _holds_finalizer(body: Mapping[str, Any] | None) -> bool:
    metadata = (body or {}).get("metadata") or {}
    return MEMBER_OBJECTS_FINALIZER in (metadata.get("finalizers") or ())


def _seconds(text: Any, default: float) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
