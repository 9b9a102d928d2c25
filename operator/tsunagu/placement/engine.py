"""The decision engine: filter every region, score the feasible ones, select, explain.

`decide` is a pure function of a job and a snapshot; `plan_batch` chains decisions, each one
taking the GPUs it was given out of the snapshot the next one sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tsunagu.api.conditions import FILTER_ORDER, Reason
from tsunagu.api.types import DatasetSpec, Objective, TrainingJobSpec
from tsunagu.placement.datapath import DataPath, modelled_loss, nearest_copy
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.residency import data_sites, residency_allows
from tsunagu.placement.scoring import (
    DEFAULT_OBJECTIVE_WEIGHTS,
    ObjectiveWeights,
    RegionCosts,
    score,
)
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import (
    REFERENCE_DESCRIPTION,
    FittedModel,
    ThroughputModel,
    choose_model,
)

MAX_ALTERNATIVES = 8
# Budgets compare floats that went through arithmetic; this keeps 15.000000000000002 within 15.
_BUDGET_TOLERANCE = 1e-9
_STAGE = {reason: index for index, reason in enumerate(FILTER_ORDER)}
_FEASIBLE_STAGE = len(FILTER_ORDER)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # Budgets for jobs that leave theirs unset (None: unset budgets do not constrain).
    default_max_rtt_ms: float | None = None
    default_max_throughput_loss: float | None = None
    # Link bandwidth the data-stall model assumes where a link declares none.
    default_bandwidth_gbps: float = 10.0
    preferred_bonus: float = 0.1
    objective_weights: tuple[tuple[Objective, ObjectiveWeights], ...] = DEFAULT_OBJECTIVE_WEIGHTS
    # What was learned per workload class (placement/calibration); only trusted fits are used.
    fitted_models: Mapping[str, FittedModel] = field(default_factory=dict)

    def weights_for(self, objective: Objective) -> ObjectiveWeights:
        for candidate, weights in self.objective_weights:
            if candidate == objective:
                return weights
        return ObjectiveWeights(time=1.0, price=1.0, carbon=1.0)

    def max_rtt_ms(self, job: TrainingJobSpec) -> float | None:
        own = job.placement.max_rtt_ms
        return own if own is not None else self.default_max_rtt_ms

    def max_throughput_loss(self, job: TrainingJobSpec) -> float | None:
        own = job.placement.max_throughput_loss
        return own if own is not None else self.default_max_throughput_loss

    def throughput_model(self, job: TrainingJobSpec) -> ThroughputModel:
        return choose_model(job.data_profile, job.workload_class, self.fitted_models)


@dataclass(frozen=True, slots=True)
class Candidate:
    """The verdict on one region for one job."""

    region: str
    feasible: bool
    reason: str  # Placed (chosen), Feasible, or the filter that rejected it
    message: str
    rtt_ms: float | None  # to the nearest copy of the data; None without a dataset or unknown
    predicted_loss: float | None
    score: float | None  # feasible regions only; higher is better


@dataclass(frozen=True, slots=True)
class Decision:
    job: tuple[str, str]
    placed: bool
    region: str | None
    reason: str
    message: str
    rtt_ms: float | None
    predicted_loss: float | None
    score: float | None
    nodes: tuple[str, ...]  # node of each rank; empty when not placed
    # Best first: the chosen region, feasible ones by score, then rejected ones by how far
    # they got through the filters, ties by name.
    candidates: tuple[Candidate, ...]
    # Which throughput model predicted the losses: "reference curve", "dataProfile" or
    # "… calibrated on N samples of class C".
    model: str = REFERENCE_DESCRIPTION

    @property
    def alternatives(self) -> tuple[Candidate, ...]:
        """Up to 8 of the best regions that were not chosen."""
        return tuple(c for c in self.candidates if c.region != self.region)[:MAX_ALTERNATIVES]


@dataclass(frozen=True, slots=True)
class _Evaluation:
    region: str
    stage: int  # index in FILTER_ORDER of the filter that rejected it, or _FEASIBLE_STAGE
    message: str
    path: DataPath | None
    loss: float | None


def _not_placed(job: TrainingJobSpec, reason: Reason, message: str) -> Decision:
    return Decision(job.key, False, None, reason, message, None, None, None, (), ())


def _fmt_loss(loss: float) -> str:
    return f"{loss:.1%}"


def _evaluate(
    job: TrainingJobSpec,
    dataset: DatasetSpec | None,
    sites: tuple[str, ...],
    region: str,
    snapshot: ClusterSnapshot,
    settings: EngineSettings,
    model: ThroughputModel,
) -> _Evaluation:
    """Run the filters of DESIGN.md §3 on one region, in order, stopping at the first that fails."""
    path: DataPath | None = None
    loss: float | None = 0.0
    if dataset is not None:
        path = snapshot.data_path(region, sites)
        loss = None if path is None else modelled_loss(model, path, settings.default_bandwidth_gbps)

    def reject(reason: Reason, message: str) -> _Evaluation:
        return _Evaluation(region, _STAGE[reason], message, path, loss)

    if snapshot.region(region).cordoned:
        return reject(Reason.RegionUnavailable, "region is cordoned")
    if not snapshot.is_available(region):
        return reject(Reason.RegionUnavailable, "region has no ready nodes")
    if region in job.placement.excluded_regions:
        return reject(Reason.RegionExcluded, "listed in spec.placement.excludedRegions")
    if dataset is not None:
        if not residency_allows(dataset, region):
            return reject(
                Reason.DataResidency,
                f"dataset {dataset.namespace}/{dataset.name} ({dataset.residency.mode}) "
                f"does not allow compute here",
            )
        if path is None or loss is None:
            return reject(
                Reason.LatencyUnknown,
                f"no fresh measurement or declared link to {', '.join(sites)}",
            )
        max_rtt = settings.max_rtt_ms(job)
        if max_rtt is not None and path.rtt_ms > max_rtt + _BUDGET_TOLERANCE:
            return reject(
                Reason.LatencyBudget,
                f"RTT {path.rtt_ms:.1f} ms to {path.site} is over maxRttMs {max_rtt:g}",
            )
        max_loss = settings.max_throughput_loss(job)
        if max_loss is not None and loss > max_loss + _BUDGET_TOLERANCE:
            return reject(
                Reason.ThroughputLossBudget,
                f"predicted throughput loss {_fmt_loss(loss)} is over maxThroughputLoss "
                f"{_fmt_loss(max_loss)}",
            )
    slots = snapshot.replica_slots(region, job.gpu_product, job.gpus_per_replica)
    if slots < job.replicas:
        product = f" of {job.gpu_product}" if job.gpu_product else ""
        return reject(
            Reason.InsufficientCapacity,
            f"gang of {job.replicas} × {job.gpus_per_replica} GPUs{product} does not fit: "
            f"room for {slots} of {job.replicas} replicas",
        )
    return _Evaluation(region, _FEASIBLE_STAGE, "", path, loss)


def _feasible_message(evaluation: _Evaluation, region_score: float) -> str:
    if evaluation.path is None:
        return f"score {region_score:.3f} (no dataset: no latency constraint)"
    loss = evaluation.loss if evaluation.loss is not None else 0.0
    return (
        f"RTT {evaluation.path.rtt_ms:.1f} ms to {evaluation.path.site}, predicted loss "
        f"{_fmt_loss(loss)}, score {region_score:.3f}"
    )


def _rank_key(candidate: Candidate, stage: int) -> tuple[int, float, str]:
    # Round so that float noise never outranks the name as the tie-breaker.
    return (-stage, -round(candidate.score or 0.0, 9), candidate.region)


def decide(
    job: TrainingJobSpec, snapshot: ClusterSnapshot, settings: EngineSettings = EngineSettings()
) -> Decision:
    """Where the job should run now, and why, against this snapshot."""
    regions = snapshot.region_names
    if not regions:
        return _not_placed(job, Reason.NoRegions, "no Region objects exist")
    dataset: DatasetSpec | None = None
    sites: tuple[str, ...] = ()
    if job.dataset_ref is not None:
        dataset = snapshot.dataset(job.namespace, job.dataset_ref)
        if dataset is None:
            return _not_placed(
                job,
                Reason.DatasetNotFound,
                f"dataset {job.namespace}/{job.dataset_ref} does not exist",
            )
        sites = data_sites(dataset)

    model = settings.throughput_model(job)
    evaluations = [
        _evaluate(job, dataset, sites, name, snapshot, settings, model) for name in regions
    ]
    feasible = [e for e in evaluations if e.stage == _FEASIBLE_STAGE]
    preferred = set(job.placement.preferred_regions)
    scores = score(
        [
            RegionCosts(
                slowdown=1.0 / max(1.0 - (e.loss or 0.0), 1e-9),
                gpu_hour_price=snapshot.region(e.region).gpu_hour_price,
                carbon_intensity=snapshot.region(e.region).carbon_intensity,
                preferred=e.region in preferred,
            )
            for e in feasible
        ],
        settings.weights_for(job.placement.objective),
        settings.preferred_bonus,
    )
    score_of = {e.region: s for e, s in zip(feasible, scores, strict=True)}

    ranked = sorted(
        (
            (
                Candidate(
                    region=e.region,
                    feasible=e.stage == _FEASIBLE_STAGE,
                    reason=(
                        Reason.Feasible if e.stage == _FEASIBLE_STAGE else FILTER_ORDER[e.stage]
                    ),
                    message=(
                        _feasible_message(e, score_of[e.region])
                        if e.region in score_of
                        else e.message
                    ),
                    rtt_ms=e.path.rtt_ms if e.path is not None else None,
                    predicted_loss=e.loss if dataset is None or e.path is not None else None,
                    score=score_of.get(e.region),
                ),
                e.stage,
            )
            for e in evaluations
        ),
        key=lambda pair: _rank_key(*pair),
    )
    candidates = [candidate for candidate, _ in ranked]
    best = candidates[0]
    if not best.feasible:
        return _explain_rejection(job, tuple(candidates), model.description)

    nodes = snapshot.pack(best.region, job.gpu_product, job.replicas, job.gpus_per_replica)
    if nodes is None:  # replica_slots said it fits; packing must agree
        raise AssertionError(f"gang of {job.key} fits {best.region} but cannot be packed")
    chosen = Candidate(
        best.region, True, Reason.Placed, best.message, best.rtt_ms, best.predicted_loss, best.score
    )
    return Decision(
        job=job.key,
        placed=True,
        region=best.region,
        reason=Reason.Placed,
        message=f"placed in {best.region}: {best.message} ({len(feasible)} of {len(regions)} "
        f"regions feasible; loss from the {model.description})",
        rtt_ms=best.rtt_ms,
        predicted_loss=best.predicted_loss,
        score=best.score,
        nodes=nodes,
        candidates=(chosen, *candidates[1:]),
        model=model.description,
    )


def _explain_rejection(
    job: TrainingJobSpec, candidates: tuple[Candidate, ...], model: str
) -> Decision:
    # Candidates are ranked by how far they got, so the first one carries the job's reason.
    furthest = candidates[0]
    counts = Counter(candidate.reason for candidate in candidates)
    summary = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return Decision(
        job=job.key,
        placed=False,
        region=None,
        reason=furthest.reason,
        message=f"no region can take the job; closest was {furthest.region}: "
        f"{furthest.message} (rejected: {summary})",
        rtt_ms=None,
        predicted_loss=None,
        score=None,
        nodes=(),
        candidates=candidates,
        model=model,
    )


def allocations_of(decision: Decision, job: TrainingJobSpec) -> dict[str, int]:
    """GPUs the decision takes from each node."""
    taken: dict[str, int] = {}
    for node in decision.nodes:
        taken[node] = taken.get(node, 0) + job.gpus_per_replica
    return taken


def plan_batch(
    jobs: Iterable[TrainingJobSpec],
    snapshot: ClusterSnapshot,
    settings: EngineSettings = EngineSettings(),
) -> tuple[tuple[Decision, ...], ClusterSnapshot]:
    """Decide each job in the order given, each placed job consuming its GPUs for the next."""
    decisions: list[Decision] = []
    for job in jobs:
        decision = decide(job, snapshot, settings)
        if decision.placed:
            snapshot = snapshot.with_allocations(allocations_of(decision, job))
        decisions.append(decision)
    return tuple(decisions), snapshot


def latency_budget_status(
    job: TrainingJobSpec,
    dataset: DatasetSpec | None,
    region: str,
    matrix: LatencyMatrix,
    now: float,
    settings: EngineSettings = EngineSettings(),
) -> tuple[bool | None, float | None]:
    """Whether a job running in `region` is within its RTT budget now, and the RTT used.

    A job without a dataset or without a budget is within it. With a budget but no known RTT
    the answer is None (unknown), so that a probe outage alone never requeues a job.
    """
    if dataset is None:
        return True, None
    path = nearest_copy(matrix, region, data_sites(dataset), now)
    rtt = path.rtt_ms if path is not None else None
    max_rtt = settings.max_rtt_ms(job)
    if max_rtt is None:
        return True, rtt
    if rtt is None:
        return None, None
    return rtt <= max_rtt + _BUDGET_TOLERANCE, rtt
