"""The pod-group binder: binds the member pods of a placed group to the nodes the engine chose.

The pods are another controller's, so nothing is created or deleted: every bind is sent at
once and the group is placed only when all of them answered. A binding cannot be taken back;
a pod whose bind failed (deleted meanwhile, a refusal) is offered again on its own, and as the
rest of its group now runs in one region it is placed there if it still fits (see
`PodGroupLifecycle`), so a gang is never spread by a partial failure it could avoid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from tsunagu.api.types import JobKey, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.controller.groups import PodGroupTracker
from tsunagu.controller.report.podgroups import PodGroupReporter
from tsunagu.controller.report.status import explain
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.binder import MAX_BIND_BACKOFF_SECONDS, refusal_message
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.placement.engine import Decision

logger = logging.getLogger(__name__)


class PodGroupBinder:
    def __init__(
        self,
        *,
        client: Kube,
        view: ClusterView,
        groups: PodGroupTracker,
        reporter: PodGroupReporter,
        assumed: AssumeCache,
        inflight: InFlight,
        concurrency: int,
        on_done: Callable[[JobKey], None],
    ) -> None:
        self.client = client
        self.view = view
        self.groups = groups
        self.reporter = reporter
        self.assumed = assumed
        self.inflight = inflight
        self.slots = asyncio.Semaphore(concurrency)
        self.on_done = on_done

    async def bind(self, job: TrainingJobSpec, decision: Decision, decided_at: float) -> None:
        key = job.key
        state = self.groups.state(key)
        started = time.perf_counter()
        try:
            ranks = list(zip(state.requested, decision.nodes, strict=True))
            async with self.slots:
                results = await asyncio.gather(
                    *(self.client.bind_pod(key[0], name, node) for name, node in ranks),
                    return_exceptions=True,
                )
            bound = [rank for rank, result in zip(ranks, results, strict=True) if result is None]
            failed = [
                (name, result)
                for (name, _), result in zip(ranks, results, strict=True)
                if isinstance(result, BaseException)
            ]
            now = time.monotonic()
            state.just_bound.update({name: now for name, _ in bound})
            annotations = None
            if failed:
                self._failed(job, failed, bound)
            else:
                metrics.BIND_SECONDS.observe(time.perf_counter() - started)
                state.bind_failures = 0
                state.not_before = 0.0
                members = self.view.members_of(key)
                annotations = self.reporter.placed(key, decision, bound, members)
            # The counts and phase follow from the pods, as the lifecycle sees them next.
            await self.reporter.write(key, {}, annotations)
        finally:
            state.requested = ()
            self.inflight.discard(key)
            self.on_done(key)

    def _failed(
        self,
        job: TrainingJobSpec,
        failed: list[tuple[str, BaseException]],
        bound: list[tuple[str, str]],
    ) -> None:
        """Some binds failed: the pods bound stay (a binding is final); the others wait a
        backoff and are offered again, kept to the region of those bound."""
        key = job.key
        state = self.groups.state(key)
        metrics.BIND_FAILURES.inc()
        state.bind_failures += 1
        state.not_before = time.time() + min(2.0**state.bind_failures, MAX_BIND_BACKOFF_SECONDS)
        names = dict(bound)
        kept = [usage for usage in self.assumed.of(key) if usage.name in names]
        self.assumed.forget(key)
        if kept:
            self.assumed.assume(key, tuple(kept))
        for name, error in failed:
            refusal = refusal_message(error)
            logger.warning(
                "pod %s/%s of group %s not bound: %s", key[0], name, key[1], refusal or error
            )
        state.verdict = None  # the next verdict is reported, whatever it is

    def unplaced(
        self, job: TrainingJobSpec, decision: Decision
    ) -> Coroutine[Any, Any, None] | None:
        """The engine placed the group nowhere: FailedScheduling on its waiting pods and the
        reason on the PodGroup, once per verdict (the PodGroup's write is returned to be run;
        None when the verdict did not change)."""
        key = job.key
        members = self.view.members_of(key)
        requested = self.groups.state(key).requested
        waiting = [members[name] for name in requested if name in members]
        annotations = self.reporter.unschedulable(key, waiting, decision.reason, explain(decision))
        if annotations is None:
            return None
        return self.reporter.write(key, {}, annotations)
