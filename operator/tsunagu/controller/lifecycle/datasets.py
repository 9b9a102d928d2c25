"""The dataset guard: data never leaves home, even when its rules change under a running job,
and a Dataset is not deleted from under the jobs that read it.

- A running job whose region its dataset's residency no longer allows gets
  `ResidencyViolated=True` with a Warning Event and is requeued (its pods deleted); placed again,
  it lands where the current rules allow.
- A Dataset used by a placed, unfinished job carries the finalizer `tsunagu.io/dataset-in-use`;
  a deletion waits until the last such job has finished or gone (a Warning Event on the Dataset
  says why), and takes no new jobs meanwhile. The finalizer is removed as soon as no job uses it.

Level-triggered: `check` looks at every Dataset and every placed job as they are now, on each
Dataset event and on a timer, so a missed event is caught up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tsunagu.api.conditions import FINISHED, RESIDENCY_VIOLATED, Reason
from tsunagu.api.names import API_VERSION, DATASET_KIND
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.jobs import JobLifecycle, is_true
from tsunagu.controller.report.events import EventRecorder, event_body
from tsunagu.controller.report.status import ConditionUpdate, timestamp
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.placement.residency import residency_allows

logger = logging.getLogger(__name__)

IN_USE_FINALIZER = "tsunagu.io/dataset-in-use"
CHECK_INTERVAL_SECONDS = 5.0


class DatasetGuard:
    def __init__(
        self,
        *,
        jobs: JobTracker,
        catalog: Catalog,
        statuses: StatusBook,
        events: EventRecorder,
        inflight: InFlight,
        lifecycle: JobLifecycle,
        client: Kube,
    ) -> None:
        self.jobs = jobs
        self.catalog = catalog
        self.statuses = statuses
        self.events = events
        self.inflight = inflight
        self.lifecycle = lifecycle
        self.client = client
        # Datasets whose blocked deletion was already reported.
        self._reported_blocked: set[JobKey] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_SECONDS)
            await self.check()

    async def check(self) -> None:
        """Requeues jobs their dataset no longer allows, then keeps each finalizer true."""
        in_use: set[JobKey] = set()
        for key in self.jobs:
            try:
                dataset_key = await self._check_job(key)
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="dataset-guard").inc()
                logger.exception("residency of %s/%s not checked; going on", *key)
                continue
            if dataset_key is not None:
                in_use.add(dataset_key)
        for dataset_key in list(self.catalog.dataset_objects):
            try:
                await self._keep_finalizer(dataset_key, dataset_key in in_use)
            except Exception:
                metrics.INTERNAL_ERRORS.labels(loop="dataset-guard").inc()
                logger.exception("finalizer of dataset %s/%s not kept; going on", *dataset_key)

    async def _check_job(self, key: JobKey) -> JobKey | None:
        """The dataset the placed job uses (None if it is not placed or uses none); a job its
        dataset no longer allows where it runs is requeued."""
        tracked = self.jobs.get(key)
        job = tracked.spec if tracked is not None else None
        if tracked is None or job is None or job.dataset_ref is None:
            return None
        region = self.statuses.current(key).get("region")
        if not region or is_true(self.statuses.condition(key, FINISHED)):
            return None
        dataset_key = (job.namespace, job.dataset_ref)
        dataset = self.catalog.datasets.get(dataset_key)
        if dataset is None or key in self.inflight or residency_allows(dataset, region):
            return dataset_key
        message = (
            f"dataset {job.dataset_ref} ({dataset.residency.mode}, home {dataset.home_region}) "
            f"no longer allows compute in {region}; requeued"
        )
        now = time.time()
        async with self.jobs.lock(key):
            self.statuses.update(
                key, tracked.generation, now,
                conditions=[
                    ConditionUpdate(RESIDENCY_VIOLATED, True, str(Reason.OutsideResidency), message)
                ],
            )  # fmt: skip
            self.events.job_event(key, "Warning", str(Reason.OutsideResidency), message)
            await self.lifecycle.requeue(job, tracked.generation, now, "residency violated")
        return dataset_key

    async def _keep_finalizer(self, key: JobKey, in_use: bool) -> None:
        known = self.catalog.dataset_objects.get(key)
        if known is None:
            return
        has = IN_USE_FINALIZER in known.finalizers
        if in_use and known.deleting:
            if key not in self._reported_blocked:
                self._reported_blocked.add(key)
                message = "deletion waits until no placed TrainingJob reads this dataset"
                self._dataset_event(key, "DatasetInUse", message)
            return
        self._reported_blocked.discard(key)
        if in_use == has or (in_use and known.deleting):
            return
        if in_use:
            finalizers = [*known.finalizers, IN_USE_FINALIZER]
        else:
            finalizers = [f for f in known.finalizers if f != IN_USE_FINALIZER]
        # With the resourceVersion it was read at: a concurrent change answers 409, and the next
        # check works from the newer object.
        await self.client.patch_dataset_metadata(
            key[0], key[1],
            {"finalizers": finalizers, "resourceVersion": known.resource_version},
        )  # fmt: skip

    def _dataset_event(self, key: JobKey, reason: str, message: str) -> None:
        known = self.catalog.dataset_objects.get(key)
        involved = {
            "apiVersion": API_VERSION,
            "kind": DATASET_KIND,
            "metadata": {"name": key[1], "namespace": key[0], "uid": known and known.uid},
        }
        now = timestamp(time.time())
        # Through the recorder's writer: a new leadership term gets a writer of its own.
        self.events.writer.post_event(event_body(involved, "Warning", reason, message, now))
