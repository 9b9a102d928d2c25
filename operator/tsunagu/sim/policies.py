"""Placement policies the simulator compares.

Every policy decides through the operator's own engine (`tsunagu.placement.engine.decide` /
`plan_batch` over a `ClusterSnapshot`): filters, capacity checks and node packing are the same
code. Baselines differ only in *which region* they take; once chosen, the region is enforced by
excluding every other region and letting the engine pick the nodes.

* `tsunagu` — the engine as the operator runs it (each job's own objective; Balanced by default).
* `tsunagu-<objective>` — the same, with every job's objective overridden.
* `home-only` — always the dataset's home region (jobs without a dataset: as `tsunagu`).
* `latency-blind` — the first region, in topology order, with room for the gang; ignores
  residency and budgets (the simulator counts its residency violations).
* `nearest-free` — the feasible region (residency and budgets respected) with the lowest RTT to
  the data.
* `assigned` — a fixed region per job, used by the offline `optimal` search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tsunagu.api.conditions import Reason
from tsunagu.api.types import DatasetSpec, Objective, Residency, ResidencyMode, TrainingJobSpec
from tsunagu.placement.engine import Candidate, Decision, EngineSettings, decide, plan_batch
from tsunagu.placement.engine import allocations_of as engine_allocations_of
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.sim.trace import TraceJob


@dataclass(frozen=True)
class Attempt:
    """One try to place a job: the decision, and where freed capacity could change it."""

    job: TraceJob
    decision: Decision
    # Regions that passed every filter but capacity: only a completion there can help.
    waiting_on: frozenset[str]


class Policy(Protocol):
    name: str

    def datasets_view(self, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        """The datasets as this policy lets the engine see them."""
        ...

    def attempt(
        self, jobs: Sequence[TraceJob], snapshot: ClusterSnapshot
    ) -> tuple[list[Attempt], ClusterSnapshot]:
        """Tries `jobs` in the order given; each placed job consumes capacity for the next."""
        ...


def allocations_of(decision: Decision, job: TraceJob) -> dict[str, int]:
    return engine_allocations_of(decision, job.spec)


def capacity_blocked(candidates: Sequence[Candidate]) -> frozenset[str]:
    return frozenset(c.region for c in candidates if c.reason == Reason.InsufficientCapacity)


def feasible(candidates: Sequence[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.feasible]


class TsunaguPolicy:
    """The operator's engine, batch by batch, exactly as `plan_batch` plans a queue."""

    def __init__(self, objective: Objective | None = None, settings: EngineSettings | None = None):
        self.objective = objective
        self.settings = settings or EngineSettings()
        self.name = "tsunagu" if objective is None else f"tsunagu-{objective.value.lower()}"

    def datasets_view(self, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        return datasets

    def attempt(
        self, jobs: Sequence[TraceJob], snapshot: ClusterSnapshot
    ) -> tuple[list[Attempt], ClusterSnapshot]:
        specs = [self._spec(job) for job in jobs]
        decisions, after = plan_batch(specs, snapshot, self.settings)
        attempts = [
            Attempt(job, decision, capacity_blocked(decision.candidates))
            for job, decision in zip(jobs, decisions, strict=True)
        ]
        return attempts, after

    def _spec(self, job: TraceJob) -> TrainingJobSpec:
        if self.objective is None:
            return job.spec
        return replace(job.spec, placement=replace(job.spec.placement, objective=self.objective))


class _RegionChooser:
    """A baseline: picks a region its own way, then lets the engine place the gang there."""

    name = "baseline"

    def __init__(self, regions: Sequence[str], settings: EngineSettings | None = None) -> None:
        self.regions = tuple(regions)
        self.order = {region: index for index, region in enumerate(self.regions)}
        self.settings = settings or EngineSettings()
        self._restricted: dict[tuple[tuple[str, str], str], TrainingJobSpec] = {}

    def datasets_view(self, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        return datasets

    def attempt(
        self, jobs: Sequence[TraceJob], snapshot: ClusterSnapshot
    ) -> tuple[list[Attempt], ClusterSnapshot]:
        attempts = []
        for job in jobs:
            attempt = self.choose(job, snapshot)
            if attempt.decision.placed:
                snapshot = snapshot.with_allocations(allocations_of(attempt.decision, job))
            attempts.append(attempt)
        return attempts, snapshot

    def choose(self, job: TraceJob, snapshot: ClusterSnapshot) -> Attempt:
        raise NotImplementedError

    def place_in(
        self, job: TraceJob, spec: TrainingJobSpec, region: str, snapshot: ClusterSnapshot
    ) -> Attempt:
        """The engine's decision for `spec` with every region but `region` excluded."""
        cache_key = (spec.key, region)
        restricted = self._restricted.get(cache_key)
        if restricted is None:
            others = tuple(name for name in self.regions if name != region)
            restricted = replace(spec, placement=replace(spec.placement, excluded_regions=others))
            self._restricted[cache_key] = restricted
        decision = decide(restricted, snapshot, self.settings)
        return Attempt(job, decision, capacity_blocked(decision.candidates))


class HomeOnlyPolicy(_RegionChooser):
    name = "home-only"

    def choose(self, job: TraceJob, snapshot: ClusterSnapshot) -> Attempt:
        if job.dataset is None:
            decision = decide(job.spec, snapshot, self.settings)
            return Attempt(job, decision, capacity_blocked(decision.candidates))
        return self.place_in(job, job.spec, job.dataset.home_region, snapshot)


class NearestFreePolicy(_RegionChooser):
    name = "nearest-free"

    def choose(self, job: TraceJob, snapshot: ClusterSnapshot) -> Attempt:
        decision = decide(job.spec, snapshot, self.settings)
        options = feasible(decision.candidates)
        if not options:
            return Attempt(job, decision, capacity_blocked(decision.candidates))
        nearest = min(options, key=lambda c: (c.rtt_ms or 0.0, self.order.get(c.region, 0)))
        return self.place_in(job, job.spec, nearest.region, snapshot)


class LatencyBlindPolicy(_RegionChooser):
    """First fit by topology order; sees every dataset as readable from anywhere."""

    name = "latency-blind"

    def datasets_view(self, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        # Reading from home keeps the engine's RTT and predicted loss meaningful for the
        # stretched run time; for a Replicated dataset a closer replica is ignored.
        return tuple(
            replace(dataset, residency=Residency(mode=ResidencyMode.RemoteAccess))
            for dataset in datasets
        )

    def choose(self, job: TraceJob, snapshot: ClusterSnapshot) -> Attempt:
        blind = replace(
            job.spec,
            placement=replace(
                job.spec.placement,
                max_rtt_ms=None,
                max_throughput_loss=None,
                preferred_regions=(),
                excluded_regions=(),
            ),
        )
        decision = decide(blind, snapshot, self.settings)
        options = feasible(decision.candidates)
        if not options:
            return Attempt(job, decision, capacity_blocked(decision.candidates))
        first = min(options, key=lambda c: self.order.get(c.region, len(self.order)))
        return self.place_in(job, blind, first.region, snapshot)


class AssignedPolicy(_RegionChooser):
    """Each job waits for the one region it was assigned (the `optimal` search sets these)."""

    name = "assigned"

    def __init__(
        self,
        regions: Sequence[str],
        assignment: Mapping[tuple[str, str], str],
        settings: EngineSettings | None = None,
    ) -> None:
        super().__init__(regions, settings)
        self.assignment = dict(assignment)

    def choose(self, job: TraceJob, snapshot: ClusterSnapshot) -> Attempt:
        return self.place_in(job, job.spec, self.assignment[job.key], snapshot)


BASELINES = ("home-only", "latency-blind", "nearest-free")
OBJECTIVE_VARIANTS = (Objective.Fastest, Objective.Cheapest, Objective.Greenest)


def standard_policies(
    regions: Sequence[str], settings: EngineSettings | None = None
) -> list[Policy]:
    """The rows of the comparison table, in the order they are printed."""
    policies: list[Policy] = [TsunaguPolicy(None, settings)]
    policies += [TsunaguPolicy(objective, settings) for objective in OBJECTIVE_VARIANTS]
    policies += [
        HomeOnlyPolicy(regions, settings),
        LatencyBlindPolicy(regions, settings),
        NearestFreePolicy(regions, settings),
    ]
    return policies
