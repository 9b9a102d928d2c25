"""The life of a pod group: when enough of its pods exist, the pods waiting for a node go into
the scheduling queue as one gang; the PodGroup's status follows its pods.

Level-triggered like `JobLifecycle`: `reconcile` looks at the members the view has now and at
the PodGroup, so it is safe on any event. A member recreated by its controller (a Job's backoff,
a JobSet restart) while the rest of the group runs is offered on its own, kept to the region its
group runs in; the scheduler lets it go elsewhere only when it fits there no more.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tsunagu.api.conditions import Reason
from tsunagu.api.fields import SpecError
from tsunagu.api.podgroups import (
    MIN_MEMBER_ANNOTATION,
    POD_GROUP_KIND,
    GroupPod,
    gang_of,
    group_name,
    group_policy,
    group_status,
    is_lone_pod,
)
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.controller.groups import PodGroupTracker
from tsunagu.controller.report.podgroups import PodGroupReporter
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.scheduling.queue import SchedulingQueue
from tsunagu.controller.tasks import TaskGroup

logger = logging.getLogger(__name__)

RECONCILE_DELAY_SECONDS = 0.25
# A group short of members says so only after this long: in a burst its pods arrive within a
# second, and a verdict per arriving pod would be an Event per pod per pod.
SHORT_REPORT_DELAY_SECONDS = 5.0
WAITING_FOR_POD_GROUP = "WaitingForPodGroup"
WAITING_FOR_PODS = "WaitingForPods"


class PodGroupLifecycle:
    def __init__(
        self,
        *,
        groups: PodGroupTracker,
        view: ClusterView,
        catalog: Catalog,
        queue: SchedulingQueue,
        assumed: AssumeCache,
        inflight: InFlight,
        reporter: PodGroupReporter,
        tasks: TaskGroup,
    ) -> None:
        self.groups = groups
        self.view = view
        self.catalog = catalog
        self.queue = queue
        self.assumed = assumed
        self.inflight = inflight
        self.reporter = reporter
        self.tasks = tasks

    def reconcile_soon(self, key: JobKey, delay: float = RECONCILE_DELAY_SECONDS) -> None:
        """Once for however many pod events of the group arrive meanwhile."""
        if key in self.groups.dirty:
            return
        self.groups.dirty.add(key)

        async def later() -> None:
            await asyncio.sleep(delay)
            self.groups.dirty.discard(key)
            await self.reconcile(key)

        self.tasks.spawn(later(), name=f"reconcile group {key[0]}/{group_name(key)}")

    async def reconcile(self, key: JobKey) -> None:
        async with self.groups.lock(key):
            try:
                await self._reconcile(key)
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="podgroups").inc()
                logger.exception("reconciling pod group %s/%s failed", key[0], group_name(key))

    async def _look_again(self, key: JobKey, delay: float) -> None:
        """Once the report delay of a group short of members ends (pod events meanwhile are
        looked at as they come)."""
        await asyncio.sleep(delay)
        self.groups.state(key).short_timer = False
        await self.reconcile(key)

    async def reconcile_all(self) -> None:
        """After taking the Lease: every group known, once."""
        for key in {*self.view.group_pods, *self.groups.objects}:
            await self.reconcile(key)

    async def _reconcile(self, key: JobKey) -> None:
        if key in self.inflight:
            return  # the binder looks again when it is done
        members = self.view.members_of(key)
        group = self.groups.objects.get(key)
        if not members and group is None:
            self.queue.remove(key)
            self.assumed.forget(key)
            self.groups.forget(key)
            return
        self._settle_assumed(key, members)
        recent = self.groups.recently_bound(key)
        pending = sorted(
            (pod for pod in members.values() if pod.pending and pod.name not in recent),
            key=lambda pod: pod.name,
        )
        active = [pod for pod in members.values() if pod.active or pod.name in recent]
        min_member = group.min_member if group is not None else None
        annotations = None
        if pending:
            annotations = self._offer(key, pending, active, min_member)
        else:
            self.queue.remove(key)
        await self.reporter.write(key, group_status(min_member, members.values()), annotations)

    def _offer(
        self, key: JobKey, pending: list[GroupPod], active: list[GroupPod], min_member: int | None
    ) -> dict[str, str] | None:
        """Queues the waiting pods as one gang, or says why they wait; returns the PodGroup
        annotations to write when the verdict changed."""
        namespace, name = key[0], group_name(key)
        invalid = self.groups.invalid.get(key)
        try:
            if invalid is not None:
                raise SpecError(POD_GROUP_KIND, f"{namespace}/{name}", "spec", invalid)
            policy = group_policy(namespace, name, pending + active)
        except SpecError as error:
            self.queue.remove(key)
            return self.reporter.unschedulable(key, pending, str(Reason.InvalidSpec), str(error))
        size = min_member if min_member is not None else policy.min_member
        if size is None and is_lone_pod(key):
            size = 1
        if size is None:
            self.queue.remove(key)
            text = (
                f"no PodGroup {name} in {namespace} and no {MIN_MEMBER_ANNOTATION} annotation "
                "on its pods: the size of the gang is not known"
            )
            return self.reporter.unschedulable(key, pending, WAITING_FOR_POD_GROUP, text)
        state = self.groups.state(key)
        if len(pending) + len(active) < size:
            self.queue.remove(key)
            now = time.monotonic()
            if state.short_since is None:
                state.short_since = now
            wait = state.short_since + SHORT_REPORT_DELAY_SECONDS - now
            if wait > 0:
                if not state.short_timer:
                    state.short_timer = True
                    self.tasks.spawn(self._look_again(key, wait), name=f"group {name} short")
                return None
            text = f"{len(pending) + len(active)} of {size} pods of the group exist"
            return self.reporter.unschedulable(key, pending, WAITING_FOR_PODS, text)
        state.short_since = None
        wait = state.not_before - time.time()
        if wait > 0:
            self.queue.remove(key)
            self.reconcile_soon(key, delay=wait)
            return None
        regions = {self._region_of(pod) for pod in active} - {None}
        keep_to = next(iter(regions)) if len(regions) == 1 else None
        try:
            spec = gang_of(
                key, pending, policy, keep_to=keep_to, regions=self.catalog.regions.keys()
            )
        except ValueError as error:  # members too unlike to be judged together
            self.queue.remove(key)
            return self.reporter.unschedulable(key, pending, str(Reason.InvalidSpec), str(error))
        state.requested = tuple(pod.name for pod in pending)
        self.queue.add(spec)
        return None

    def _region_of(self, pod: GroupPod) -> str | None:
        node = self.view.nodes.get(pod.node_name or "")
        return node.region if node is not None else None

    def _settle_assumed(self, key: JobKey, members: dict[str, GroupPod]) -> None:
        """Assumed pods the watch now shows bound (or gone) need no assumption any more."""
        assumed = self.assumed.of(key)
        if assumed and all(
            usage.name not in members or members[usage.name].node_name for usage in assumed
        ):
            self.assumed.forget(key)
