"""The decision loop: pending TrainingJobs are decided one at a time (priority, then age) against
one snapshot that each placed job consumes, plus the assume cache. A placed job goes to the gang
binder in the background, so a slow API call never stalls the next decision."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from tsunagu.api.conditions import SCHEDULED
from tsunagu.api.podgroups import is_group_key
from tsunagu.api.types import JobKey, PodUsage, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.builders import pod_name
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.connection import ClusterSet
from tsunagu.controller.groups import PodGroupTracker
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import MAX_MESSAGE, placement_status, scheduled_condition
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.binder import GangBinder
from tsunagu.controller.scheduling.groupbinder import PodGroupBinder
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.scheduling.queue import SchedulingQueue
from tsunagu.controller.tasks import TaskGroup
from tsunagu.placement.engine import Decision, EngineSettings, decide, with_decision
from tsunagu.placement.snapshot import ClusterSnapshot

logger = logging.getLogger(__name__)

# Coalesces a burst of wake-ups (50 jobs created at once) into one pass over the queue.
BATCH_DELAY_SECONDS = 0.05


class Scheduler:
    def __init__(
        self,
        *,
        queue: SchedulingQueue,
        catalog: Catalog,
        clusters: ClusterSet,
        assumed: AssumeCache,
        inflight: InFlight,
        jobs: JobTracker,
        statuses: StatusBook,
        events: EventRecorder,
        binder: GangBinder,
        groups: PodGroupTracker,
        group_binder: PodGroupBinder,
        tasks: TaskGroup,
        engine: EngineSettings,
        retry_interval: float,
    ) -> None:
        self.queue = queue
        self.catalog = catalog
        self.clusters = clusters
        self.assumed = assumed
        self.inflight = inflight
        self.jobs = jobs
        self.statuses = statuses
        self.events = events
        self.binder = binder
        self.groups = groups
        self.group_binder = group_binder
        self.tasks = tasks
        self.engine = engine
        self.retry_interval = retry_interval

    async def run(self) -> None:
        while True:
            await self.queue.wait(self.retry_interval)
            await asyncio.sleep(BATCH_DELAY_SECONDS)
            try:
                await self.schedule_pending()
            except Exception:
                logger.exception("scheduling pass failed; retrying on the next wake-up")

    async def schedule_pending(self) -> None:
        """One pass: every pending job not being bound already is decided once."""
        jobs = [job for job in self.queue.ordered() if job.key not in self.inflight]
        metrics.QUEUE_LENGTH.set(len(jobs))
        if not jobs:
            return
        now = time.time()
        snapshot = self.catalog.snapshot((c.view for c in self.clusters), now, self.assumed.pods())
        for job in jobs:
            if job.key not in self.queue:  # deleted while we were deciding others
                continue
            try:
                snapshot = self._decide_one(job, snapshot, now)
            except Exception:
                # One job the engine cannot handle must not keep the others waiting.
                metrics.INTERNAL_ERRORS.labels(loop="decision").inc()
                logger.exception("deciding %s/%s failed; going on", job.namespace, job.name)
            # One decision is ~1 ms; yielding keeps watch events flowing during a long backlog.
            await asyncio.sleep(0)
        metrics.QUEUE_LENGTH.set(len(self.queue))

    def _decide_one(
        self, job: TrainingJobSpec, snapshot: ClusterSnapshot, now: float
    ) -> ClusterSnapshot:
        """Decides one job; returns the snapshot the next job is decided against."""
        started = time.perf_counter()
        group = is_group_key(job.key)
        settings = self.catalog.engine_for(job.namespace, self.engine)
        decision = decide(job, snapshot, settings)
        if not decision.placed and group and job.placement.excluded_regions:
            # Members offered again, kept to their group's region, fit there no more: they go
            # where they fit, as a gang of their own.
            job = replace(job, placement=replace(job.placement, excluded_regions=()))
            decision = decide(job, snapshot, settings)
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        if decision.placed:
            if group:
                names = self.groups.state(job.key).requested
            else:
                names = tuple(pod_name(job.name, rank) for rank in range(job.replicas))
            # Before anything is marked: a gang whose pods do not match the decision stays queued.
            pods = _assumed_pods(job, decision, names)
            self.queue.remove(job.key)
            self.inflight.add(job.key)
            self.assumed.assume(job.key, pods)
            binder = self.group_binder if group else self.binder
            self.tasks.spawn(
                binder.bind(job, decision, now), name=f"bind {job.namespace}/{job.name}"
            )
            # Every resource of each pod taken, not only its GPUs: the next job sees it.
            return with_decision(snapshot, decision, job)
        if group:
            write = self.group_binder.unplaced(job, decision)
            if write is not None:
                self.tasks.spawn(write, name=f"report group {job.namespace}/{job.name}")
        elif self._verdict_changed(job.key, decision):
            self._report_unplaced(job, decision, now)
        return snapshot

    def _verdict_changed(self, key: JobKey, decision: Decision) -> bool:
        """False when status already says exactly this: most retries of a backlog change
        nothing."""
        previous = self.statuses.condition(key, SCHEDULED)
        condition = scheduled_condition(decision)
        return (
            previous is None
            or previous.get("status") != "False"
            or previous.get("reason") != condition.reason
            or previous.get("message") != condition.message[:MAX_MESSAGE]
            or previous.get("observedGeneration") != self.jobs.generation(key)
        )

    def _report_unplaced(self, job: TrainingJobSpec, decision: Decision, now: float) -> None:
        """Scheduled=False with the dominant reason; an Event and a metric only when it
        changes."""
        previous = self.statuses.condition(job.key, SCHEDULED)
        condition = scheduled_condition(decision)
        changed = previous is None or previous.get("reason") != condition.reason
        # The explanation is rewritten only when the verdict changes, not on every retry.
        fields = {"placement": placement_status(decision, now)} if changed else {}
        generation = self.jobs.generation(job.key)
        self.statuses.update(job.key, generation, now, conditions=[condition], fields=fields)
        if changed:
            metrics.PLACEMENTS.labels(region="", outcome=decision.reason).inc()
            self.events.job_event(job.key, "Warning", decision.reason, condition.message)


def _assumed_pods(
    job: TrainingJobSpec, decision: Decision, names: Sequence[str]
) -> tuple[PodUsage, ...]:
    """The gang's pods as bound, with everything each requests of its node."""
    requirements = job.pod_requirements
    return tuple(
        PodUsage(
            job.namespace, name, node, job.gpus_per_replica, False,
            requests=requirements.requests, host_ports=requirements.host_ports,
        )
        for name, node in zip(names, decision.nodes, strict=True)
    )  # fmt: skip
