"""The decision engine: filter every region, score the feasible ones, select, explain.

`decide` is a pure function of a job and a snapshot; `plan_batch` chains decisions, each one
taking every resource of the pods it placed out of the snapshot the next one sees. The region
filters and their order are the table in `placement.filters`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tsunagu.api.conditions import FILTER_ORDER, Reason
from tsunagu.api.scheduling import PodRequirements
from tsunagu.api.types import DatasetSpec, TrainingJobSpec
from tsunagu.placement.datapath import DataPath, modelled_loss, nearest_copy
from tsunagu.placement.filters import (
    BUDGET_TOLERANCE,
    FILTERS,
    EngineSettings,
    JobContext,
    format_loss,
)
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.residency import data_sites
from tsunagu.placement.scoring import RegionCosts, score
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import (
    REFERENCE_DESCRIPTION,
)

MAX_ALTERNATIVES = 8
DEFAULT_SETTINGS = EngineSettings()
_FEASIBLE_STAGE = len(FILTER_ORDER)
_FILTER_FUNCTIONS = tuple(enumerate(region_filter for _, region_filter in FILTERS))

__all__ = [
    "MAX_ALTERNATIVES",
    "Candidate",
    "Decision",
    "EngineSettings",
    "allocations_of",
    "decide",
    "latency_budget_status",
    "placed_pods",
    "plan_batch",
    "with_decision",
]


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
    # Where the RTT came from: a measurement's source (e.g. Prometheus), Declared or Local.
    rtt_source: str | None = None


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
    rtt_source: str | None = None
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


def _evaluate(context: JobContext, region: str) -> _Evaluation:
    """Run the filters of DESIGN.md §3 on one region, in order, stopping at the first that fails."""
    path: DataPath | None = None
    loss: float | None = 0.0
    if context.dataset is not None:
        path = context.snapshot.data_path(region, context.sites)
        loss = (
            None
            if path is None
            else modelled_loss(context.model, path, context.settings.default_bandwidth_gbps)
        )
    for stage, region_filter in _FILTER_FUNCTIONS:
        message = region_filter(context, region, path, loss)
        if message is not None:
            return _Evaluation(region, stage, message, path, loss)
    return _Evaluation(region, _FEASIBLE_STAGE, "", path, loss)


def _feasible_message(evaluation: _Evaluation, region_score: float) -> str:
    if evaluation.path is None:
        return f"score {region_score:.3f} (no dataset: no latency constraint)"
    loss = evaluation.loss if evaluation.loss is not None else 0.0
    path = evaluation.path
    return (
        f"RTT {path.rtt_ms:.1f} ms ({path.source}) to {path.site}, predicted loss "
        f"{format_loss(loss)}, score {region_score:.3f}"
    )


def _rank_key(candidate: Candidate, stage: int) -> tuple[int, float, str]:
    # Round so that float noise never outranks the name as the tie-breaker.
    return (-stage, -round(candidate.score or 0.0, 9), candidate.region)


def decide(
    job: TrainingJobSpec, snapshot: ClusterSnapshot, settings: EngineSettings = DEFAULT_SETTINGS
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

    demand = snapshot.demand(job.pod_requirements, job.gpu_product)
    model = settings.throughput_model(job)
    context = JobContext(job, dataset, sites, snapshot, settings, demand, model)
    evaluations = [_evaluate(context, name) for name in regions]
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
                    rtt_source=e.path.source if e.path is not None else None,
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

    nodes = snapshot.pack_gang(best.region, demand, job.replicas)
    if nodes is None:  # gang_slots said it fits; packing must agree
        raise AssertionError(f"gang of {job.key} fits {best.region} but cannot be packed")
    chosen = Candidate(
        best.region, True, Reason.Placed, best.message, best.rtt_ms, best.predicted_loss,
        best.score, best.rtt_source,
    )  # fmt: skip
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
        rtt_source=best.rtt_source,
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
    """GPUs the decision takes from each node (`placed_pods` has every resource)."""
    taken: dict[str, int] = {}
    for node in decision.nodes:
        taken[node] = taken.get(node, 0) + job.gpus_per_replica
    return taken


def placed_pods(
    decision: Decision, job: TrainingJobSpec
) -> tuple[tuple[str, PodRequirements], ...]:
    """The pods a decision binds: (node, requirements) per rank."""
    requirements = job.pod_requirements
    return tuple((node, requirements) for node in decision.nodes)


def with_decision(
    snapshot: ClusterSnapshot, decision: Decision, job: TrainingJobSpec
) -> ClusterSnapshot:
    """The snapshot once the decision's pods are bound, every resource of each taken."""
    if not decision.placed:
        return snapshot
    return snapshot.with_pods(placed_pods(decision, job))


def plan_batch(
    jobs: Iterable[TrainingJobSpec],
    snapshot: ClusterSnapshot,
    settings: EngineSettings = DEFAULT_SETTINGS,
) -> tuple[tuple[Decision, ...], ClusterSnapshot]:
    """Decide each job in the order given, each placed job consuming its pods' resources."""
    decisions: list[Decision] = []
    for job in jobs:
        decision = decide(job, snapshot, settings)
        snapshot = with_decision(snapshot, decision, job)
        decisions.append(decision)
    return tuple(decisions), snapshot


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """A running job's RTT budget, judged now."""

    met: bool | None  # None: a budget, but no RTT known (never a breach by itself)
    rtt_ms: float | None
    source: str | None  # where the RTT came from (a measurement's source, Declared, Local)


def check_latency_budget(
    job: TrainingJobSpec,
    dataset: DatasetSpec | None,
    region: str,
    matrix: LatencyMatrix,
    now: float,
    settings: EngineSettings = DEFAULT_SETTINGS,
) -> BudgetCheck:
    """Whether a job running in `region` is within its RTT budget now, the RTT used and its
    source. A job without a dataset or without a budget is within it. With a budget but no
    known RTT the answer is None (unknown), so that a probe outage alone never requeues a job.
    """
    if dataset is None:
        return BudgetCheck(True, None, None)
    path = nearest_copy(matrix, region, data_sites(dataset), now)
    rtt = path.rtt_ms if path is not None else None
    source = path.source if path is not None else None
    max_rtt = settings.max_rtt_ms(job)
    if max_rtt is None:
        return BudgetCheck(True, rtt, source)
    if rtt is None:
        return BudgetCheck(None, None, None)
    return BudgetCheck(rtt <= max_rtt + BUDGET_TOLERANCE, rtt, source)


def latency_budget_status(
    job: TrainingJobSpec,
    dataset: DatasetSpec | None,
    region: str,
    matrix: LatencyMatrix,
    now: float,
    settings: EngineSettings = DEFAULT_SETTINGS,
) -> tuple[bool | None, float | None]:
    """`check_latency_budget` as (met, RTT used)."""
    check = check_latency_budget(job, dataset, region, matrix, now, settings)
    return check.met, check.rtt_ms
