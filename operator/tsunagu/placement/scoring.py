"""Scoring of feasible regions by the job's objective (DESIGN.md §3, step 2).

Each region is described by three costs, all per unit of training work so that a slower region
pays for its slowdown in every term: time (the slowdown 1/(1-loss)), money (GPU-hour price ×
slowdown) and carbon (intensity × slowdown). Each cost is normalised across the feasible regions
as its excess over the best one, relative to the worst, so every term lies in [0, 1) whatever its
unit. The score is 1 minus the weighted mean excess, plus a bonus for preferred regions: higher
is better, and the best region on every weighted term scores 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tsunagu.api.types import Objective


@dataclass(frozen=True, slots=True)
class ObjectiveWeights:
    time: float
    price: float
    carbon: float


DEFAULT_OBJECTIVE_WEIGHTS: tuple[tuple[Objective, ObjectiveWeights], ...] = (
    (Objective.Fastest, ObjectiveWeights(time=1.0, price=0.0, carbon=0.0)),
    (Objective.Cheapest, ObjectiveWeights(time=0.0, price=1.0, carbon=0.0)),
    (Objective.Greenest, ObjectiveWeights(time=0.0, price=0.0, carbon=1.0)),
    (Objective.Balanced, ObjectiveWeights(time=1.0, price=1.0, carbon=1.0)),
)


@dataclass(frozen=True, slots=True)
class RegionCosts:
    slowdown: float
    gpu_hour_price: float
    carbon_intensity: float
    preferred: bool

    @property
    def price_per_work(self) -> float:
        return self.gpu_hour_price * self.slowdown

    @property
    def carbon_per_work(self) -> float:
        return self.carbon_intensity * self.slowdown


def _excess(values: Sequence[float]) -> list[float]:
    best, worst = min(values), max(values)
    if worst <= 0 or worst == best:
        return [0.0] * len(values)
    return [(value - best) / worst for value in values]


def score(
    costs: Sequence[RegionCosts], weights: ObjectiveWeights, preferred_bonus: float
) -> list[float]:
    """Score of each region, in the order given."""
    if not costs:
        return []
    terms = (
        (weights.time, _excess([cost.slowdown for cost in costs])),
        (weights.price, _excess([cost.price_per_work for cost in costs])),
        (weights.carbon, _excess([cost.carbon_per_work for cost in costs])),
    )
    total_weight = sum(weight for weight, _ in terms)
    scores = []
    for index, cost in enumerate(costs):
        penalty = sum(weight * excess[index] for weight, excess in terms)
        value = 1.0 - (penalty / total_weight if total_weight > 0 else 0.0)
        scores.append(value + (preferred_bonus if cost.preferred else 0.0))
    return scores
