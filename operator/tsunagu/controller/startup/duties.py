"""What only the leader does, started when this replica takes the Lease and stopped when it
loses it: the decision loop (and through it the binder), the lifecycle's reconciles, the
reports (statuses and Events), Region status, the dataset guard, the latency-budget checks and
the throughput learner (ThroughputProfiles' status).

A standby keeps only what keeps its view warm (the watches, the lists' results, latency
measurements); taking over then costs no relisting. Writes are refused by the Lease's gate in
`Kube` the moment the renew deadline passes, whatever is still running; stopping the loops here
follows within a retry period and clears what a term leaves half-done, so that the next term
starts from what the API server has, not from what this one meant to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from tsunagu.api.names import TRAINING_JOBS
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.report.regions import RegionStatusWriter
from tsunagu.controller.report.writer import ReportWriter
from tsunagu.controller.tasks import TaskGroup

if TYPE_CHECKING:
    from tsunagu.controller.startup.operator import Operator

logger = logging.getLogger(__name__)

# The reconcile-all pass of a new term yields to the loop every so many jobs, so watch events,
# the Lease's renewals and the binds of the first decisions flow during a long backlog.
RECONCILE_YIELD_EVERY = 200
FINAL_FLUSH_SECONDS = 10.0


class TermTasks(TaskGroup):
    """The tasks of one term: a task spawned while no term runs (a timer of the lifecycle firing
    after the Lease was lost) is dropped, never run."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        if not self.open:
            coroutine.close()
            return
        super().spawn(coroutine, name)


class LeaderDuties:
    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.active = False
        self.terms = 0
        self._checking_budgets = False
        self._last_measurements = time.monotonic()
        # Set after a term ended: the status book may hold what that term meant to write.
        self._stale = False
        metrics.LEADER.set(0)

    async def start(self) -> None:
        """The Lease was taken: decide first, then look at every job; reports catch up."""
        operator = self.operator
        self.terms += 1
        metrics.LEADER_TRANSITIONS.inc()
        if self._stale:
            self._clear_term_state()
        operator.reports = ReportWriter(
            operator.statuses, operator.cluster.client, gangs_idle=operator.inflight.idle,
            max_hold=operator.settings.reporting.hold_seconds,
        )  # fmt: skip
        operator.events.writer = operator.reports
        # What a Region's status was last written as: another leader may have written since.
        operator.region_status = RegionStatusWriter(
            operator.catalog, operator.clusters, operator.settings.reporting, operator.events
        )
        operator.tasks.open = True
        # Not here: `start` runs in the elector's loop, which must go on renewing meanwhile.
        operator.tasks.spawn(self._begin(), name="term start")

    async def _begin(self) -> None:
        """The term acts once the view of pods is current: after an outage (the API server
        restarted, this replica cut off) the pod watch may still be catching up, and the last
        term's binds, no longer assumed, would look like free GPUs. At once otherwise."""
        operator = self.operator
        waited = time.monotonic()
        await operator.cluster.view_current()
        waited = time.monotonic() - waited
        if waited > 0.5:
            logger.info("term %d: waited %.1f s for the pod watch to catch up", self.terms, waited)
        if self._stale:
            try:
                await self._reseed_statuses()
            except Exception as error:  # the reconcile-all pass repairs what is off
                logger.warning("statuses not listed again for the new term: %s", error)
        tasks = operator.tasks
        self.active = True
        metrics.LEADER.set(1)
        tasks.spawn(operator.scheduler.run(), name="decision loop")
        tasks.spawn(operator.reports.run(), name="reports")
        tasks.spawn(operator.region_status.run(), name="region status")
        tasks.spawn(operator.datasets.run(), name="dataset guard")
        if operator.latency is not None:
            tasks.spawn(self._latency_ageing(), name="latency ageing")
        if operator.learning is not None:
            tasks.spawn(operator.learning.run(), name="throughput learning")
        tasks.spawn(self._reconcile_all(), name="reconcile all")
        for name in list(operator.members.members):
            # Once its view is current: its jobs looked at, anchors of jobs gone removed.
            tasks.spawn(operator.member_reachability(name), name=f"cluster {name} term start")

    async def stop(self, flush: bool = False) -> None:
        """The Lease was lost (or the operator stops): every task of the term ends. At shutdown
        (`flush`), what was held for gangs is written while the Lease still allows it."""
        operator = self.operator
        was_active, self.active = self.active, False
        metrics.LEADER.set(0)
        operator.tasks.open = False
        await operator.tasks.cancel_all()
        if flush and was_active:
            try:
                await asyncio.wait_for(operator.reports.flush(), timeout=FINAL_FLUSH_SECONDS)
            except Exception as error:
                logger.warning("statuses or Events not written at shutdown: %s", error)
        if was_active:
            self._clear_term_state()
            self._stale = True

    def measurements_updated(self) -> None:
        """New latency measurements in the catalog: the leader judges every budget again."""
        self._last_measurements = time.monotonic()
        self._check_budgets()

    def _check_budgets(self) -> None:
        if not self.active or self._checking_budgets:
            return
        self._checking_budgets = True

        async def check() -> None:
            try:
                await self.operator.budgets.check_all()
            finally:
                self._checking_budgets = False

        self.operator.tasks.spawn(check(), name="latency budgets")

    async def _latency_ageing(self) -> None:
        """Measurements age out when the source stops answering: look again every interval
        without an update."""
        interval = self.operator.settings.latency.interval_seconds
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_measurements >= interval:
                self._check_budgets()
                self.operator.queue.wake()

    async def _reconcile_all(self) -> None:
        """Every job once, as a start does: pending ones into the queue (the decision loop,
        already running, takes them as they come), gangs adopted or repaired."""
        started = time.monotonic()
        operator = self.operator
        for count, key in enumerate(self._by_priority(), start=1):
            await operator.lifecycle.reconcile(key)
            if count % RECONCILE_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await operator.group_lifecycle.reconcile_all()
        logger.info(
            "term %d: %d jobs and %d pod groups looked at in %.1f s",
            self.terms, len(operator.jobs), len(operator.groups.states),
            time.monotonic() - started,
        )  # fmt: skip

    def _by_priority(self) -> list[JobKey]:
        """Every job, highest priority and oldest first: the decision loop, already running,
        takes the first jobs queued while the pass goes on, so with thousands of jobs the first
        decisions are the ones that matter most."""
        jobs = self.operator.jobs

        def order(key: JobKey) -> tuple[int, float, JobKey]:
            tracked = jobs.get(key)
            spec = tracked.spec if tracked is not None else None
            return (-spec.priority, spec.created_at, key) if spec else (0, float("inf"), key)

        return sorted(jobs, key=order)

    def _clear_term_state(self) -> None:
        """What a term leaves half-done: jobs being bound, GPUs assumed, timers and backoffs.
        The next term finds the gangs as the API server has them and repairs them."""
        operator = self.operator
        for part in (operator.inflight, operator.assumed, operator.queue):
            part.clear()
        operator.jobs.clear_term_state()
        operator.groups.clear_term()

    async def _reseed_statuses(self) -> None:
        """Statuses as the API server has them: the last term may have meant more than it
        wrote. Only after a term of ours ended; a replica that was standby from its start has
        followed every status write of the leader through its watch."""
        operator = self.operator
        client = operator.cluster.client
        token = None
        while True:
            page = await client.call(client.list_page, TRAINING_JOBS, token)
            for job in page.items:
                metadata = job["metadata"]
                key = (metadata["namespace"], metadata["name"])
                if key in operator.jobs:
                    operator.statuses.forget(key)
                    operator.statuses.seed(key, job.get("status"))
            token = page.next_token
            if token is None:
                break
        self._stale = False
