"""Keeps a TrainingJob's status true to its pods: Running, Finished, restarts within
`backoffLimit`, gangs broken by a crash or a lost region, and latency-budget breaches.

It is level-triggered: `reconcile_job` looks at what exists now (the job, its pods, the nodes) and
acts, so it is safe to call on any event, as often as needed, and after an operator restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from tsunagu.api.conditions import FINISHED, LATENCY_BUDGET_MET, RUNNING, SCHEDULED, Reason
from tsunagu.api.parse import SpecError, parse_training_job
from tsunagu.api.types import BreachAction, PlacementMode, TrainingJobSpec
from tsunagu.controller import metrics
from tsunagu.controller.builders import build_service
from tsunagu.controller.runtime import JobKey, Runtime
from tsunagu.controller.status import (
    ConditionUpdate,
    replica_counts,
    starting_condition,
    timestamp,
)
from tsunagu.controller.view import JobPod
from tsunagu.placement.engine import latency_budget_status

logger = logging.getLogger(__name__)


def _is_true(condition: dict[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


# Pod events of one gang arrive in bursts (8 pods × created, bound, running): one look suffices.
# A quarter second gathers a gang's pods coming up into one status write, not one per pod.
RECONCILE_DELAY_SECONDS = 0.25


def reconcile_soon(rt: Runtime, key: JobKey) -> None:
    """Reconciles the job shortly, once for however many events arrive meanwhile."""
    if key in rt.dirty:
        return
    rt.dirty.add(key)

    async def later() -> None:
        await asyncio.sleep(RECONCILE_DELAY_SECONDS)
        rt.dirty.discard(key)
        await reconcile_job(rt, key)

    rt.spawn(later(), name=f"reconcile {key[0]}/{key[1]}")


async def reconcile_job(rt: Runtime, key: JobKey) -> None:
    async with rt.lock(key):
        await _reconcile(rt, key)


async def _reconcile(rt: Runtime, key: JobKey) -> None:
    body = rt.view.jobs.get(key)
    if body is None or key in rt.inflight:
        return
    now = time.time()
    generation = int(body["metadata"].get("generation") or 0)
    try:
        job = parse_training_job(body)
    except SpecError as error:
        rt.queue.remove(key)
        _report_invalid(rt, key, generation, now, str(error))
        return
    if _is_true(rt.statuses.condition(key, FINISHED)):
        rt.queue.remove(key)
        return
    uid = body["metadata"].get("uid")
    pods = rt.view.pods_of(key)
    ours = {name: pod for name, pod in pods.items() if pod.owner_uid == uid}
    if len(ours) < len(pods):
        # Pods of an earlier job with the same name are still going away: wait for them.
        return
    if not ours:
        rt.teardown.discard(key)
        await _no_pods(rt, job, generation, now)
        return
    if key in rt.teardown or any(pod.deleting for pod in ours.values()):
        return  # a rollback, restart or requeue is in progress; the delete events call us again
    rt.queue.remove(key)
    await _with_pods(rt, job, generation, now, list(ours.values()))


def _report_invalid(rt: Runtime, key: JobKey, generation: int, now: float, message: str) -> None:
    previous = rt.statuses.condition(key, SCHEDULED)
    rt.statuses.update(
        key, generation, now,
        conditions=[ConditionUpdate(SCHEDULED, False, str(Reason.InvalidSpec), message)],
    )  # fmt: skip
    if previous is None or previous.get("message") != message:
        rt.post_event(key, "Warning", str(Reason.InvalidSpec), message)


async def _no_pods(rt: Runtime, job: TrainingJobSpec, generation: int, now: float) -> None:
    status = rt.statuses.current(job.key)
    if status.get("region"):
        if _events_still_coming(rt, job.key):
            return  # bound a moment ago: the watch has not shown its pods yet
        # Placed before, but its pods are gone (deleted by someone, or never created).
        await _requeue(rt, job, generation, now, "the job's pods disappeared", delete=False)
        return
    _enqueue(rt, job, now)


def _enqueue(rt: Runtime, job: TrainingJobSpec, now: float) -> None:
    wait = rt.not_before.get(job.key, 0.0) - now
    if wait > 0:
        asyncio.get_running_loop().call_later(wait, _enqueue_later, rt, job.key)
        return
    rt.not_before.pop(job.key, None)
    rt.queue.add(job)


def _enqueue_later(rt: Runtime, key: JobKey) -> None:
    rt.not_before.pop(key, None)
    rt.spawn(reconcile_job(rt, key), name=f"requeue {key[0]}/{key[1]}")


async def _with_pods(
    rt: Runtime, job: TrainingJobSpec, generation: int, now: float, pods: list[JobPod]
) -> None:
    status = rt.statuses.current(job.key)
    counts = replica_counts(
        job.replicas,
        running=sum(p.phase == "Running" for p in pods),
        succeeded=sum(p.phase == "Succeeded" for p in pods),
        failed=sum(p.phase == "Failed" for p in pods),
    )
    ranks = {p.rank for p in pods}
    complete = ranks == set(range(job.replicas)) and len(pods) == job.replicas
    bound = all(p.node_name for p in pods)
    if counts["failedReplicas"]:
        await _restart_or_fail(rt, job, generation, now, counts)
    elif complete and counts["succeededReplicas"] == job.replicas:
        rt.statuses.update(
            job.key, generation, now,
            conditions=[
                ConditionUpdate(FINISHED, True, str(Reason.Succeeded), "every replica succeeded"),
                ConditionUpdate(RUNNING, False, str(Reason.Succeeded), "the job has finished"),
            ],
            fields={**counts, "completionTime": status.get("completionTime") or timestamp(now)},
        )  # fmt: skip
        rt.post_event(job.key, "Normal", str(Reason.Succeeded), "every replica succeeded")
    elif not complete or (job.placement.mode is PlacementMode.Bind and not bound):
        if _events_still_coming(rt, job.key):
            return
        # Left half-made by a crash, or a pod was deleted: the gang is all-or-nothing.
        await _requeue(rt, job, generation, now, "the gang was incomplete")
    elif any(p.node_name and not rt.view.node_alive(p.node_name) for p in pods):
        await _requeue(rt, job, generation, now, "a node of the job's region was lost")
    else:
        await _running(rt, job, generation, now, pods, counts, bound)


# How long after binding a gang its pods may still be missing from the watch.
WATCH_LAG_SECONDS = 30.0


def _events_still_coming(rt: Runtime, key: JobKey) -> bool:
    bound_at = rt.just_bound.get(key)
    if bound_at is None:
        return False
    left = bound_at + WATCH_LAG_SECONDS - time.monotonic()
    if left > 0:
        # Look again when the grace ends, in case no further event arrives.
        asyncio.get_running_loop().call_later(left, reconcile_soon, rt, key)
        return True
    del rt.just_bound[key]
    return False


async def _running(
    rt: Runtime,
    job: TrainingJobSpec,
    generation: int,
    now: float,
    pods: list[JobPod],
    counts: dict[str, int],
    bound: bool,
) -> None:
    status = rt.statuses.current(job.key)
    fields: dict[str, Any] = dict(counts)
    conditions = []
    if not status.get("region"):
        # Bound before a crash, status never written: adopt the gang as it is. Its Service
        # comes after the pods (see the binder) and may not have been made yet.
        body = rt.view.jobs.get(job.key)
        if body is not None:
            await rt.kube.create_service(build_service(job, body))
        region = next((p.region for p in pods if p.region), None)
        fields["region"] = region
        conditions.append(
            ConditionUpdate(SCHEDULED, True, str(Reason.Placed), f"adopted the gang in {region}")
        )
    if bound:
        rt.assumed.forget(job.key)
        rt.just_bound.pop(job.key, None)
    if counts["runningReplicas"] == job.replicas:
        conditions.append(
            ConditionUpdate(RUNNING, True, str(Reason.PodsRunning), "every replica runs")
        )
        fields["startTime"] = status.get("startTime") or timestamp(now)
        was_running = _is_true(rt.statuses.condition(job.key, RUNNING))
    else:
        conditions.append(starting_condition(job.replicas - counts["runningReplicas"]))
        was_running = True
    rt.statuses.update(job.key, generation, now, conditions=conditions, fields=fields)
    if not was_running:
        rt.post_event(job.key, "Normal", str(Reason.PodsRunning), "every replica runs")


async def _restart_or_fail(
    rt: Runtime, job: TrainingJobSpec, generation: int, now: float, counts: dict[str, int]
) -> None:
    restarts = int(rt.statuses.current(job.key).get("restarts") or 0)
    if restarts < job.backoff_limit:
        message = (
            f"a replica failed; recreating the gang (restart {restarts + 1} of {job.backoff_limit})"
        )
        rt.statuses.update(
            job.key, generation, now,
            conditions=[
                ConditionUpdate(SCHEDULED, False, str(Reason.Restarting), message),
                ConditionUpdate(RUNNING, False, str(Reason.Restarting), message),
            ],
            fields={**counts, "restarts": restarts + 1},
            remove=("region",),
        )  # fmt: skip
        rt.post_event(job.key, "Warning", str(Reason.Restarting), message)
    else:
        message = f"a replica failed and backoffLimit ({job.backoff_limit}) is reached"
        rt.statuses.update(
            job.key, generation, now,
            conditions=[
                ConditionUpdate(FINISHED, True, str(Reason.Failed), message),
                ConditionUpdate(RUNNING, False, str(Reason.Failed), message),
            ],
            fields={**counts, "completionTime": timestamp(now)},
        )  # fmt: skip
        rt.post_event(job.key, "Warning", str(Reason.Failed), message)
    await _delete_gang(rt, job, only_live=restarts >= job.backoff_limit)


async def _requeue(
    rt: Runtime, job: TrainingJobSpec, generation: int, now: float, why: str, delete: bool = True
) -> None:
    metrics.REQUEUES.labels(reason=why).inc()
    message = f"requeued: {why}"
    rt.statuses.update(
        job.key, generation, now,
        conditions=[
            ConditionUpdate(SCHEDULED, False, str(Reason.Requeued), message),
            ConditionUpdate(RUNNING, False, str(Reason.Requeued), message),
        ],
        remove=("region", "startTime"),
    )  # fmt: skip
    rt.post_event(job.key, "Warning", str(Reason.Requeued), message)
    rt.assumed.forget(job.key)
    if delete:
        await _delete_gang(rt, job)
    else:
        _enqueue(rt, job, now)


async def _delete_gang(rt: Runtime, job: TrainingJobSpec, only_live: bool = False) -> None:
    rt.teardown.add(job.key)
    pods = rt.view.pods_of(job.key).values()
    targets = [p for p in pods if not (only_live and p.phase in ("Succeeded", "Failed"))]
    await asyncio.gather(
        *(rt.kube.delete_pod(job.namespace, p.name) for p in targets),
        return_exceptions=True,
    )


async def check_latency_budgets(rt: Runtime) -> None:
    """LatencyBudgetMet for every placed job with a dataset; Requeue acts after the tolerance."""
    now = time.time()
    matrix = rt.view.latency()
    for key, body in list(rt.view.jobs.items()):
        status = rt.statuses.current(key)
        region = status.get("region")
        if not region or key in rt.inflight or _is_true(rt.statuses.condition(key, FINISHED)):
            continue
        try:
            job = parse_training_job(body)
        except SpecError:
            continue
        dataset = rt.view.datasets.get((job.namespace, job.dataset_ref or ""))
        if dataset is None:
            continue
        met, rtt = latency_budget_status(job, dataset, region, matrix, now, rt.settings)
        generation = int(body["metadata"].get("generation") or 0)
        async with rt.lock(key):
            await _latency_verdict(rt, job, generation, now, met, rtt)


async def _latency_verdict(
    rt: Runtime,
    job: TrainingJobSpec,
    generation: int,
    now: float,
    met: bool | None,
    rtt: float | None,
) -> None:
    status = rt.statuses.current(job.key)
    latency = dict(status.get("latency") or {})
    if rtt is not None:
        latency["rttMs"] = round(rtt, 3)
        latency["observedAt"] = timestamp(now)
    if met is None:
        condition = ConditionUpdate(
            LATENCY_BUDGET_MET, None, str(Reason.LatencyUnknown), "no fresh RTT to the data"
        )
    elif met:
        latency.pop("overBudgetSince", None)
        condition = ConditionUpdate(
            LATENCY_BUDGET_MET, True, str(Reason.WithinBudget), f"RTT {rtt:.1f} ms within budget"
        )
    else:
        since = latency.setdefault("overBudgetSince", timestamp(now))
        condition = ConditionUpdate(
            LATENCY_BUDGET_MET, False, str(Reason.OverBudget),
            f"RTT {rtt:.1f} ms over budget since {since}",
        )  # fmt: skip
    previous = rt.statuses.condition(job.key, LATENCY_BUDGET_MET)
    rt.statuses.update(
        job.key, generation, now, conditions=[condition], fields={"latency": latency}
    )
    if previous is None or previous.get("reason") != condition.reason:
        kind = "Warning" if met is False else "Normal"
        rt.post_event(job.key, kind, condition.reason, condition.message)
    if met is False and job.placement.on_latency_breach is BreachAction.Requeue:
        over_for = now - _parse_time(latency["overBudgetSince"])
        if over_for >= job.placement.breach_tolerance_seconds:
            await _requeue(rt, job, generation, now, "latency budget breached")


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
