"""Summaries of a simulation: the numbers the comparison table and `-o json` print."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tsunagu.sim.simulator import SimulationResult

# Board power of one training GPU under load, including its share of the server (kW). Used only
# to turn GPU-hours into kWh for the CO₂ column; it scales every policy alike.
GPU_POWER_KW = 0.7


@dataclass(frozen=True)
class PolicySummary:
    policy: str
    jobs: int
    unplaced: int
    mean_jct_seconds: float
    p95_jct_seconds: float
    mean_queue_seconds: float
    mean_predicted_slowdown: float
    gpu_utilization: float
    residency_violations: int
    cost: float
    co2_kg: float
    # Jobs that really ran slower than their maxThroughputLoss; None when the run had no
    # workload classes (then the real loss is the predicted one, and budgets hold by design).
    budget_violations: int | None = None

    def as_json(self) -> dict[str, float | int | None]:
        # A policy that placed nothing has no mean: null, never the invalid JSON token NaN.
        in_fact = (
            {} if self.budget_violations is None else {"budgetViolations": self.budget_violations}
        )
        return in_fact | {
            "meanJctSeconds": _finite(self.mean_jct_seconds, 3),
            "p95JctSeconds": _finite(self.p95_jct_seconds, 3),
            "meanQueueSeconds": _finite(self.mean_queue_seconds, 3),
            "meanPredictedSlowdown": _finite(self.mean_predicted_slowdown, 5),
            "gpuUtilization": round(self.gpu_utilization, 5),
            "residencyViolations": self.residency_violations,
            "cost": round(self.cost, 3),
            "co2Kg": round(self.co2_kg, 3),
        }


def _finite(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of values ≤ it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(
    result: SimulationResult, gpu_power_kw: float = GPU_POWER_KW, in_fact: bool = False
) -> PolicySummary:
    """The summary of a run; `in_fact`: the run knew the true classes, so count budget
    violations in fact."""
    outcomes = result.outcomes
    regions = {region.name: region for region in result.topology.regions}
    gpu_hours = [outcome.gpus * outcome.run_seconds / 3600.0 for outcome in outcomes]
    cost = sum(
        hours * regions[o.region].gpu_hour_price
        for o, hours in zip(outcomes, gpu_hours, strict=True)
    )
    grams = sum(
        hours * gpu_power_kw * regions[o.region].carbon_intensity
        for o, hours in zip(outcomes, gpu_hours, strict=True)
    )
    return PolicySummary(
        policy=result.policy,
        jobs=len(outcomes) + len(result.unplaced),
        unplaced=len(result.unplaced),
        mean_jct_seconds=mean([o.jct_seconds for o in outcomes]),
        p95_jct_seconds=percentile([o.jct_seconds for o in outcomes], 0.95),
        mean_queue_seconds=mean([o.queue_seconds for o in outcomes]),
        mean_predicted_slowdown=mean([o.slowdown for o in outcomes]),
        gpu_utilization=utilization(result),
        residency_violations=sum(1 for o in outcomes if o.residency_violation),
        cost=cost,
        co2_kg=grams / 1000.0,
        budget_violations=sum(1 for o in outcomes if o.budget_violation) if in_fact else None,
    )


def utilization(result: SimulationResult) -> float:
    """GPU-seconds held by jobs over GPU-seconds available, from first arrival to last finish."""
    if not result.outcomes:
        return 0.0
    start = min(o.arrival_seconds for o in result.outcomes)
    end = max(o.end_seconds for o in result.outcomes)
    capacity = result.topology.total_gpus() * (end - start)
    held = sum(o.gpus * o.run_seconds for o in result.outcomes)
    return held / capacity if capacity > 0 else 0.0


def gpu_use_by_region(result: SimulationResult) -> dict[str, list[tuple[float, int]]]:
    """Per region, the steps (time, GPUs in use from then on), for plots over time."""
    changes: dict[str, dict[float, int]] = {}
    for outcome in result.outcomes:
        steps = changes.setdefault(outcome.region, {})
        steps[outcome.start_seconds] = steps.get(outcome.start_seconds, 0) + outcome.gpus
        steps[outcome.end_seconds] = steps.get(outcome.end_seconds, 0) - outcome.gpus
    series = {}
    for region, steps in changes.items():
        level = 0
        points = []
        for when in sorted(steps):
            level += steps[when]
            points.append((when, level))
        series[region] = points
    return series
