"""The decision loop and the gang binder.

Decisions are made one job at a time (priority, then age) against one snapshot that each placed
job consumes, plus the assume cache; creating and binding pods happens in background tasks so a
slow API call never stalls the next decision. A gang is all-or-nothing: if any pod cannot be
created or bound, every pod of the gang is deleted and the job is queued again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from tsunagu.api.conditions import SCHEDULED, Reason
from tsunagu.api.types import PlacementMode, PodUsage, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.builders import build_pod, build_service, pod_name
from tsunagu.controller.kube import Conflict
from tsunagu.controller.runtime import JobKey, Runtime
from tsunagu.controller.status import (
    MAX_MESSAGE,
    placement_status,
    replica_counts,
    scheduled_condition,
    starting_condition,
)
from tsunagu.placement.engine import Decision, allocations_of, decide

logger = logging.getLogger(__name__)

# Coalesces a burst of wake-ups (50 jobs created at once) into one pass over the queue.
BATCH_DELAY_SECONDS = 0.05
MAX_BIND_BACKOFF_SECONDS = 60.0
ROLLBACK_WAIT_SECONDS = 60.0


async def decision_loop(rt: Runtime) -> None:
    while True:
        await rt.queue.wait(rt.config.retry_interval)
        await asyncio.sleep(BATCH_DELAY_SECONDS)
        try:
            await schedule_pending(rt)
        except Exception:
            logger.exception("scheduling pass failed; retrying on the next wake-up")


async def schedule_pending(rt: Runtime) -> None:
    jobs = [job for job in rt.queue.ordered() if job.key not in rt.inflight]
    metrics.QUEUE_LENGTH.set(len(jobs))
    if not jobs:
        return
    now = time.time()
    snapshot = rt.view.snapshot(now, rt.assumed.pods())
    for job in jobs:
        if job.key not in rt.queue:  # deleted while we were deciding others
            continue
        started = time.perf_counter()
        decision = decide(job, snapshot, rt.settings)
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        if decision.placed:
            snapshot = snapshot.with_allocations(allocations_of(decision, job))
            rt.queue.remove(job.key)
            rt.inflight.add(job.key)
            rt.assumed.assume(job.key, _assumed_pods(job, decision))
            rt.spawn(bind_gang(rt, job, decision, now), name=f"bind {job.namespace}/{job.name}")
        elif _verdict_changed(rt, job.key, decision):
            report_unplaced(rt, job, decision, now)
        # One decision is ~1 ms; yielding keeps watch events flowing during a long backlog.
        await asyncio.sleep(0)
    metrics.QUEUE_LENGTH.set(len(rt.queue))


def _verdict_changed(rt: Runtime, key: JobKey, decision: Decision) -> bool:
    """False when status already says exactly this: most retries of a backlog change nothing."""
    previous = rt.statuses.condition(key, SCHEDULED)
    condition = scheduled_condition(decision)
    return (
        previous is None
        or previous.get("status") != "False"
        or previous.get("reason") != condition.reason
        or previous.get("message") != condition.message[:MAX_MESSAGE]
        or previous.get("observedGeneration") != _generation(rt, key)
    )


def _assumed_pods(job: TrainingJobSpec, decision: Decision) -> tuple[PodUsage, ...]:
    return tuple(
        PodUsage(job.namespace, pod_name(job.name, rank), node, job.gpus_per_replica, False)
        for rank, node in enumerate(decision.nodes)
    )


def report_unplaced(rt: Runtime, job: TrainingJobSpec, decision: Decision, now: float) -> None:
    """Scheduled=False with the dominant reason; an Event and a metric only when it changes."""
    previous = rt.statuses.condition(job.key, SCHEDULED)
    condition = scheduled_condition(decision)
    changed = previous is None or previous.get("reason") != condition.reason
    generation = _generation(rt, job.key)
    # The explanation is rewritten only when the verdict changes, not on every retry.
    fields = {"placement": placement_status(decision, now)} if changed else {}
    rt.statuses.update(job.key, generation, now, conditions=[condition], fields=fields)
    if changed:
        metrics.PLACEMENTS.labels(region="", outcome=decision.reason).inc()
        rt.post_event(job.key, "Warning", decision.reason, condition.message)


def _generation(rt: Runtime, key: JobKey) -> int:
    body = rt.view.jobs.get(key) or {}
    return int((body.get("metadata") or {}).get("generation") or 0)


async def bind_gang(
    rt: Runtime, job: TrainingJobSpec, decision: Decision, decided_at: float
) -> None:
    started = time.perf_counter()
    ours: list[str] = []
    try:
        async with rt.bind_slots:
            await _create_and_bind(rt, job, decision, ours)
    except Exception as error:
        await _roll_back(rt, job, error, ours)
        return
    metrics.BIND_SECONDS.observe(time.perf_counter() - started)
    rt.bind_failures.pop(job.key, None)
    rt.just_bound[job.key] = time.monotonic()
    _report_placed(rt, job, decision, decided_at)
    rt.inflight.discard(job.key)
    # Imported here: lifecycle and scheduler call each other, the cycle is only at run time.
    from tsunagu.controller.lifecycle import reconcile_soon

    # Soon, not now: by then the pods coming up are one status write, not one each.
    reconcile_soon(rt, job.key)


async def _create_and_bind(
    rt: Runtime, job: TrainingJobSpec, decision: Decision, ours: list[str]
) -> None:
    """Creates and binds the gang; `ours` collects the pods this attempt owns (for a rollback)."""
    body = rt.view.jobs.get(job.key)
    if body is None:
        raise RuntimeError("the TrainingJob was deleted before its pods were created")
    assert decision.region is not None
    dataset = rt.view.datasets.get((job.namespace, job.dataset_ref)) if job.dataset_ref else None
    region = rt.view.regions.get(decision.region)
    selector = dict(region.node_selector) if region and region.node_selector else None
    pods = [
        build_pod(job, body, rank, decision.region, dataset, selector)
        for rank in range(job.replicas)
    ]
    await _all(_create_pod(rt, pod, ours) for pod in pods)
    if job.placement.mode is PlacementMode.Bind:
        await _all(
            rt.kube.bind_pod(job.namespace, pod_name(job.name, rank), node)
            for rank, node in enumerate(decision.nodes)
        )
    # After the pods, not before: kube-controller-manager's endpoints controllers look through
    # every pod of the namespace on each event of a pod the Service selects. Created now, the
    # Service sees its rank-0 pod bound already; created first, it would also see it created and
    # bound, two more looks through thousands of pods per gang during a burst.
    await rt.kube.create_service(build_service(job, body))


async def _all(calls: Iterable[Awaitable[Any]]) -> None:
    """Like gather, but lets every call finish before raising the first error: a rollback must
    know every pod that was created."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _create_pod(rt: Runtime, pod: dict[str, Any], ours: list[str]) -> None:
    name = pod["metadata"]["name"]
    try:
        await rt.kube.create_pod(pod)
        ours.append(name)
    except Conflict:
        # A pod of this name exists: only ours, unbound, may be reused (e.g. after a crash).
        existing = await rt.kube.call(
            rt.kube.read_pod, pod["metadata"]["namespace"], pod["metadata"]["name"]
        )
        owner = pod["metadata"]["ownerReferences"][0]["uid"]
        owners = [r.get("uid") for r in existing["metadata"].get("ownerReferences") or []]
        if owner not in owners or existing["spec"].get("nodeName"):
            raise RuntimeError(f"pod {name} exists already") from None
        ours.append(name)


async def _roll_back(
    rt: Runtime, job: TrainingJobSpec, error: BaseException, ours: list[str]
) -> None:
    """Deletes the pods this attempt created (never a pod of someone else's with the same name)."""
    logger.warning("gang of %s/%s rolled back: %s", job.namespace, job.name, error)
    metrics.BIND_FAILURES.inc()
    failures = rt.bind_failures.get(job.key, 0) + 1
    rt.bind_failures[job.key] = failures
    rt.not_before[job.key] = time.time() + min(2.0**failures, MAX_BIND_BACKOFF_SECONDS)
    await asyncio.gather(
        *(rt.kube.delete_pod(job.namespace, name) for name in ours),
        return_exceptions=True,
    )
    # The next attempt reuses the pod names: it must not start while the old pods still exist.
    await _wait_until_gone(rt, job.namespace, ours)
    rt.assumed.forget(job.key)
    rt.inflight.discard(job.key)
    rt.post_event(job.key, "Warning", "BindFailed", f"gang rolled back, will retry: {error}")
    from tsunagu.controller.lifecycle import reconcile_job

    await reconcile_job(rt, job.key)


async def _wait_until_gone(rt: Runtime, namespace: str, names: list[str]) -> None:
    deadline = time.monotonic() + ROLLBACK_WAIT_SECONDS
    remaining = list(names)
    while remaining and time.monotonic() < deadline:
        exists = await asyncio.gather(
            *(rt.kube.call(rt.kube.pod_exists, namespace, name) for name in remaining),
            return_exceptions=True,
        )
        remaining = [name for name, found in zip(remaining, exists, strict=True) if found]
        if remaining:
            await asyncio.sleep(0.5)


def _report_placed(rt: Runtime, job: TrainingJobSpec, decision: Decision, now: float) -> None:
    condition = scheduled_condition(decision)
    rt.statuses.update(
        job.key,
        _generation(rt, job.key),
        now,
        conditions=[condition, starting_condition(job.replicas)],
        fields={
            "region": decision.region,
            "placement": placement_status(decision, now),
            **replica_counts(job.replicas),
        },
    )
    metrics.PLACEMENTS.labels(region=decision.region or "", outcome=str(Reason.Placed)).inc()
    if decision.predicted_loss is not None:
        metrics.PREDICTED_LOSS.labels(region=decision.region or "").observe(decision.predicted_loss)
    rt.post_event(job.key, "Normal", str(Reason.Placed), condition.message)
