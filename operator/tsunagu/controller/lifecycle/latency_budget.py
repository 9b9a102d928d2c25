"""The latency-budget monitor: LatencyBudgetMet for every placed job with a dataset, judged on
the live RTT between the job's region and the nearest copy of its data; with
`onLatencyBreach: Requeue` a breach longer than the tolerance sends the job back to the queue.
The leader looks again on every refresh of the latency source and as measurements age out
(`startup.duties`)."""

from __future__ import annotations

import logging
import time

from tsunagu.api.conditions import FINISHED, LATENCY_BUDGET_MET, Reason
from tsunagu.api.types import BreachAction, JobKey, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.jobs import JobLifecycle, is_true
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import ConditionUpdate, parse_timestamp, timestamp
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.placement.engine import BudgetCheck, EngineSettings, check_latency_budget
from tsunagu.placement.latency import LatencyMatrix

logger = logging.getLogger(__name__)


class LatencyBudgetMonitor:
    def __init__(
        self,
        *,
        jobs: JobTracker,
        catalog: Catalog,
        statuses: StatusBook,
        events: EventRecorder,
        inflight: InFlight,
        lifecycle: JobLifecycle,
        engine: EngineSettings,
    ) -> None:
        self.jobs = jobs
        self.catalog = catalog
        self.statuses = statuses
        self.events = events
        self.inflight = inflight
        self.lifecycle = lifecycle
        self.engine = engine

    async def check_all(self) -> None:
        """One look at every placed job with a dataset."""
        now = time.time()
        matrix = self.catalog.latency()
        for key in self.jobs:
            try:
                await self._check(key, matrix, now)
            except Exception:
                # One job's state (a Region deleted under it, say) must not end the checks of
                # every job after it.
                metrics.INTERNAL_ERRORS.labels(loop="latency-budget").inc()
                logger.exception("latency budget of %s/%s not checked; going on", *key)

    async def _check(self, key: JobKey, matrix: LatencyMatrix, now: float) -> None:
        region = self.statuses.current(key).get("region")
        if not region or key in self.inflight:
            return
        if is_true(self.statuses.condition(key, FINISHED)):
            return
        tracked = self.jobs.get(key)
        job = tracked.spec if tracked is not None else None
        if tracked is None or job is None:
            return
        dataset = self.catalog.dataset(job.namespace, job.dataset_ref)
        if dataset is None:
            return
        check = check_latency_budget(job, dataset, region, matrix, now, self.engine)
        async with self.jobs.lock(key):
            await self._verdict(job, tracked.generation, now, check)

    async def _verdict(
        self,
        job: TrainingJobSpec,
        generation: int,
        now: float,
        check: BudgetCheck,
    ) -> None:
        met, rtt = check.met, check.rtt_ms
        status = self.statuses.current(job.key)
        latency = dict(status.get("latency") or {})
        if rtt is not None:
            latency["rttMs"] = round(rtt, 3)
            latency["observedAt"] = timestamp(now)
            latency["rttSource"] = check.source
        if met is None:
            condition = ConditionUpdate(
                LATENCY_BUDGET_MET, None, str(Reason.LatencyUnknown), "no fresh RTT to the data"
            )
        elif met:
            latency.pop("overBudgetSince", None)
            # Without an RTT budget any RTT is within it, even an unknown one.
            message = (
                "no RTT budget"
                if rtt is None
                else f"RTT {rtt:.1f} ms ({check.source}) within budget"
            )
            condition = ConditionUpdate(LATENCY_BUDGET_MET, True, str(Reason.WithinBudget), message)
        else:
            since = latency.setdefault("overBudgetSince", timestamp(now))
            condition = ConditionUpdate(
                LATENCY_BUDGET_MET, False, str(Reason.OverBudget),
                f"RTT {rtt:.1f} ms ({check.source}) over budget since {since}",
            )  # fmt: skip
        previous = self.statuses.condition(job.key, LATENCY_BUDGET_MET)
        self.statuses.update(
            job.key, generation, now, conditions=[condition], fields={"latency": latency}
        )
        if previous is None or previous.get("reason") != condition.reason:
            kind = "Warning" if met is False else "Normal"
            self.events.job_event(job.key, kind, condition.reason, condition.message)
        if met is False and job.placement.on_latency_breach is BreachAction.Requeue:
            since = parse_timestamp(latency["overBudgetSince"])
            over_for = now - (since if since is not None else now)
            if over_for >= job.placement.breach_tolerance_seconds:
                await self.lifecycle.requeue(job, generation, now, "latency budget breached")
