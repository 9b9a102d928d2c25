"""Everything the handlers share, kept in Kopf's `memo` (never in module globals)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tsunagu.controller.assume import AssumeCache
from tsunagu.controller.config import OperatorConfig
from tsunagu.controller.inflight import InFlight
from tsunagu.controller.kube import Kube, event_body
from tsunagu.controller.queue import SchedulingQueue
from tsunagu.controller.reports import ReportWriter
from tsunagu.controller.status import timestamp
from tsunagu.controller.statusbook import StatusBook
from tsunagu.controller.view import ClusterView
from tsunagu.placement.engine import EngineSettings

logger = logging.getLogger(__name__)

JobKey = tuple[str, str]


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    settings: EngineSettings
    view: ClusterView
    statuses: StatusBook
    queue: SchedulingQueue = field(default_factory=SchedulingQueue)
    assumed: AssumeCache = field(default_factory=AssumeCache)
    # Jobs whose gang is being created and bound right now: the lifecycle leaves them alone.
    inflight: InFlight = field(default_factory=InFlight)
    # Earliest time (time.time()) a job may be queued again after a failed bind.
    not_before: dict[JobKey, float] = field(default_factory=dict)
    bind_failures: dict[JobKey, int] = field(default_factory=dict)
    # Jobs whose pods tsunagu is deleting (restart, requeue): nothing is decided until gone.
    teardown: set[JobKey] = field(default_factory=set)
    # Gangs bound a moment ago (time.monotonic()): watch events of their pods may still be on
    # their way, so a pod missing from the view is not yet a broken gang.
    just_bound: dict[JobKey, float] = field(default_factory=dict)
    # Jobs with a reconcile already scheduled (see lifecycle.reconcile_soon).
    dirty: set[JobKey] = field(default_factory=set)
    # One reconcile at a time per job: two watch events must not both act on the same failure.
    # Weak: a lock lives while a reconcile holds or awaits it, not once per job for ever.
    locks: weakref.WeakValueDictionary[JobKey, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    bind_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))
    # Statuses and Events wait while gangs are being bound (see `reports`).
    reports: ReportWriter = field(init=False)

    def __post_init__(self) -> None:
        self.reports = ReportWriter(
            self.statuses, self.kube, gangs_idle=self.inflight.idle,
            max_hold=self.config.report_hold_seconds,
        )  # fmt: skip

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs a coroutine in the background, keeping a reference and logging its failure."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    def lock(self, key: JobKey) -> asyncio.Lock:
        lock = self.locks.get(key)
        if lock is None:
            lock = self.locks[key] = asyncio.Lock()
        return lock

    def post_event(self, key: JobKey, kind: str, reason: str, message: str) -> None:
        """Posts an Event on the TrainingJob with the same reason as its condition."""
        body = self.view.jobs.get(key)
        if body is None:
            return
        self.reports.post_event(event_body(body, kind, reason, message, timestamp(time.time())))

    def forget_job(self, key: JobKey) -> None:
        """Drops everything kept about a deleted TrainingJob."""
        self.view.jobs.pop(key, None)
        self.queue.remove(key)
        self.assumed.forget(key)
        self.statuses.forget(key)
        self.not_before.pop(key, None)
        self.bind_failures.pop(key, None)
        self.teardown.discard(key)
        self.just_bound.pop(key, None)
