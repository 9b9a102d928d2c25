"""Pure computation of TrainingJob and Region status: conditions keyed by type, placement
explanations, and Region GPU summaries. Nothing here talks to the API server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tsunagu.api.conditions import CONDITION_TYPES, FINISHED, RUNNING, SCHEDULED, Reason
from tsunagu.placement.engine import MAX_ALTERNATIVES, Candidate, Decision
from tsunagu.placement.snapshot import RegionCapacity
from tsunagu.placement.wire import known_numbers

MAX_MESSAGE = 1024
MAX_MODEL = 256


def timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> float | None:
    """Unix seconds of an RFC 3339 time as `timestamp` writes it; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ConditionUpdate:
    type: str
    status: bool | None  # None → "Unknown"
    reason: str
    message: str


def _status_text(value: bool | None) -> str:
    return "Unknown" if value is None else ("True" if value else "False")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]],
    updates: Iterable[ConditionUpdate],
    generation: int,
    now: float,
) -> list[dict[str, Any]]:
    """Applies updates to a condition list keyed by type.

    lastTransitionTime moves only when the status flips, as the API conventions ask.
    """
    by_type = {str(c["type"]): dict(c) for c in existing if "type" in c}
    for update in updates:
        status = _status_text(update.status)
        previous = by_type.get(update.type)
        transition = timestamp(now)
        if previous is not None and previous.get("status") == status:
            transition = previous.get("lastTransitionTime", transition)
        by_type[update.type] = {
            "type": update.type,
            "status": status,
            "reason": str(update.reason),
            "message": update.message[:MAX_MESSAGE],
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    return sorted(by_type.values(), key=_condition_order)


def job_state(conditions: Sequence[Mapping[str, Any]]) -> str:
    """One word for `kubectl get`: Succeeded or Failed once finished, Running while every
    replica runs, Pending otherwise."""
    by_type = {c.get("type"): c for c in conditions}
    finished = by_type.get(FINISHED)
    if finished is not None and finished.get("status") == "True":
        return str(finished.get("reason"))
    running = by_type.get(RUNNING)
    if running is not None and running.get("status") == "True":
        return "Running"
    return "Pending"


def _condition_order(condition: Mapping[str, Any]) -> tuple[int, str]:
    order = CONDITION_TYPES
    kind = str(condition["type"])
    return (order.index(kind) if kind in order else len(order), kind)


def alternative_entry(candidate: Candidate) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "region": candidate.region,
        "verdict": "Feasible" if candidate.feasible else "Rejected",
        "reason": str(candidate.reason),  # the engine's Reason enum, written as plain JSON
    }
    if candidate.rtt_source is not None:
        entry["rttSource"] = candidate.rtt_source
    return entry | known_numbers(candidate.rtt_ms, candidate.predicted_loss)


def placement_status(decision: Decision, now: float) -> dict[str, Any]:
    placement: dict[str, Any] = {
        "decidedAt": timestamp(now),
        "alternatives": [alternative_entry(c) for c in decision.alternatives[:MAX_ALTERNATIVES]],
    }
    if decision.region is not None:
        placement["region"] = decision.region
    if decision.rtt_source is not None:
        placement["rttSource"] = decision.rtt_source
    if decision.placed:
        placement["model"] = decision.model[:MAX_MODEL]
    return placement | known_numbers(decision.rtt_ms, decision.predicted_loss, decision.score)


def explain(decision: Decision) -> str:
    """One line a person reads in `kubectl describe`: where, at what cost, and why not elsewhere."""
    if not decision.placed:
        return decision.message
    rejected = [c for c in decision.candidates if not c.feasible]
    why_not = ", ".join(f"{c.region}: {c.reason}" for c in rejected[:6])
    if len(rejected) > 6:
        why_not += f", +{len(rejected) - 6} more"
    return f"{decision.message}; rejected {why_not}" if why_not else decision.message


def scheduled_condition(decision: Decision) -> ConditionUpdate:
    if decision.placed:
        return ConditionUpdate(SCHEDULED, True, str(Reason.Placed), explain(decision))
    return ConditionUpdate(SCHEDULED, False, decision.reason, explain(decision))


def starting_condition(waiting: int) -> ConditionUpdate:
    """Running=False while replicas come up (the same words at placement and afterwards, so the
    first look after binding has nothing new to write)."""
    return ConditionUpdate(
        RUNNING, False, str(Reason.PodsStarting), f"{waiting} replica(s) starting"
    )


def replica_counts(
    replicas: int, running: int = 0, succeeded: int = 0, failed: int = 0
) -> dict[str, int]:
    return {
        "replicas": replicas,
        "runningReplicas": running,
        "succeededReplicas": succeeded,
        "failedReplicas": failed,
    }


def region_status_fields(capacity: RegionCapacity) -> dict[str, Any]:
    return {
        "gpuCapacity": capacity.gpu_capacity,
        "gpuAllocatable": capacity.gpu_allocatable,
        "gpuAllocated": capacity.gpu_allocated,
        "gpuFree": capacity.gpu_free,
        "readyNodes": capacity.ready_nodes,
        "nodes": capacity.nodes,
        "gpus": f"{capacity.gpu_free}/{capacity.gpu_allocatable}",
    }
