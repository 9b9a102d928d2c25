"""The decision engine: rejection reasons, filter order, scoring by objective, batches."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_placement_fixtures import (
    NOW,
    dataset,
    job,
    link,
    node,
    region,
    snapshot,
)
from tsunagu.api.conditions import FILTER_ORDER, Reason
from tsunagu.api.types import DataProfile, Objective, ResidencyMode, TrainingJobSpec
from tsunagu.placement.engine import (
    Decision,
    EngineSettings,
    allocations_of,
    decide,
    latency_budget_status,
    plan_batch,
)
from tsunagu.placement.latency import LatencyMatrix, Measurement
from tsunagu.placement.ordering import queue_order
from tsunagu.placement.snapshot import ClusterSnapshot


def two_regions(
    *,
    remote: dict[str, Any] | None = None,
    remote_nodes: list[Any] | None = None,
    rtt_ms: float | None = 10.0,
    data: Any = None,
    measurements: list[Measurement] | None = None,
) -> ClusterSnapshot:
    """Home region `tokyo` (cordoned) holding the data, and a remote region `osaka` under test."""
    links = [link("tokyo", rtt_ms)] if rtt_ms is not None else []
    return snapshot(
        [region("tokyo", cordoned=True), region("osaka", links=links, **(remote or {}))],
        [node("tk-1", "tokyo")]
        + (remote_nodes if remote_nodes is not None else [node("os-1", "osaka", 8)]),
        datasets=[data or dataset("tokyo")],
        measurements=measurements or [],
    )


def candidate_reason(decision: Decision, region_name: str) -> str:
    return next(c.reason for c in decision.candidates if c.region == region_name)


@pytest.mark.parametrize(
    ("snap", "spec", "reason"),
    [
        pytest.param(
            two_regions(remote={"cordoned": True}), job(), Reason.RegionUnavailable, id="cordoned"
        ),
        pytest.param(
            two_regions(remote_nodes=[node("os-1", "osaka", 8, schedulable=False)]),
            job(),
            Reason.RegionUnavailable,
            id="no-ready-nodes",
        ),
        pytest.param(two_regions(remote_nodes=[]), job(), Reason.RegionUnavailable, id="no-nodes"),
        pytest.param(two_regions(), job(excluded=["osaka"]), Reason.RegionExcluded, id="excluded"),
        pytest.param(
            two_regions(data=dataset("tokyo", ResidencyMode.Pinned)),
            job(),
            Reason.DataResidency,
            id="pinned",
        ),
        pytest.param(
            two_regions(data=dataset("tokyo", allowed=["sapporo"])),
            job(),
            Reason.DataResidency,
            id="not-in-allowed",
        ),
        pytest.param(
            two_regions(data=dataset("tokyo", denied=["osaka"])),
            job(),
            Reason.DataResidency,
            id="denied",
        ),
        pytest.param(
            two_regions(data=dataset("tokyo", ResidencyMode.Replicated, replicas=["sapporo"])),
            job(),
            Reason.DataResidency,
            id="not-a-replica",
        ),
        pytest.param(two_regions(rtt_ms=None), job(), Reason.LatencyUnknown, id="no-link"),
        pytest.param(
            two_regions(rtt_ms=None, measurements=[Measurement("osaka", "tokyo", 5, 0, NOW - 600)]),
            job(),
            Reason.LatencyUnknown,
            id="stale-measurement",
        ),
        pytest.param(
            two_regions(rtt_ms=25), job(max_rtt_ms=20), Reason.LatencyBudget, id="rtt-over"
        ),
        pytest.param(
            two_regions(rtt_ms=None, measurements=[Measurement("osaka", "tokyo", 19, 2, NOW)]),
            job(max_rtt_ms=20),
            Reason.LatencyBudget,
            id="jitter-pushes-over",
        ),
        pytest.param(
            two_regions(rtt_ms=15), job(max_loss=0.10), Reason.ThroughputLossBudget, id="loss-over"
        ),
        pytest.param(
            two_regions(rtt_ms=10),
            job(max_loss=0.2, profile=DataProfile(0, 1, 1, 0.01, 0)),
            Reason.ThroughputLossBudget,
            id="data-stall-over",
        ),
        pytest.param(
            two_regions(), job(replicas=2, gpus=8), Reason.InsufficientCapacity, id="gang-too-big"
        ),
        pytest.param(
            two_regions(), job(product="H100"), Reason.InsufficientCapacity, id="wrong-product"
        ),
        pytest.param(two_regions(rtt_ms=20), job(max_rtt_ms=20), Reason.Placed, id="rtt-at-budget"),
        pytest.param(
            two_regions(rtt_ms=15), job(max_loss=0.12), Reason.Placed, id="loss-at-budget"
        ),
    ],
)
def test_each_rejection_reason(snap: ClusterSnapshot, spec: TrainingJobSpec, reason: str) -> None:
    decision = decide(spec, snap)
    assert candidate_reason(decision, "osaka") == reason
    assert decision.placed is (reason == Reason.Placed)
    if not decision.placed:
        # The home region is cordoned, so the remote region got at least as far and, sorting
        # first by name, carries the job's reason.
        assert decision.reason == reason


@pytest.mark.parametrize(
    ("remote", "data", "spec", "rtt_ms", "reason"),
    [
        pytest.param(
            {"cordoned": True},
            None,
            job(excluded=["osaka"]),
            10,
            Reason.RegionUnavailable,
            id="unavailable-before-excluded",
        ),
        pytest.param(
            {},
            dataset("tokyo", ResidencyMode.Pinned),
            job(excluded=["osaka"]),
            10,
            Reason.RegionExcluded,
            id="excluded-before-residency",
        ),
        pytest.param(
            {},
            dataset("tokyo", ResidencyMode.Pinned),
            job(),
            None,
            Reason.DataResidency,
            id="residency-before-unknown-latency",
        ),
        pytest.param(
            {},
            None,
            job(max_rtt_ms=5, max_loss=0.01),
            10,
            Reason.LatencyBudget,
            id="rtt-before-loss",
        ),
        pytest.param(
            {},
            None,
            job(max_loss=0.01, replicas=4),
            10,
            Reason.ThroughputLossBudget,
            id="loss-before-capacity",
        ),
    ],
)
def test_filter_order(
    remote: dict[str, Any], data: Any, spec: TrainingJobSpec, rtt_ms: float | None, reason: str
) -> None:
    decision = decide(spec, two_regions(remote=remote, data=data, rtt_ms=rtt_ms))
    assert candidate_reason(decision, "osaka") == reason


def test_filter_order_matches_design() -> None:
    assert [str(reason) for reason in FILTER_ORDER] == [
        "RegionUnavailable",
        "RegionExcluded",
        "DataResidency",
        "LatencyUnknown",
        "LatencyBudget",
        "ThroughputLossBudget",
        "InsufficientCapacity",
    ]


def unplaceable_world() -> ClusterSnapshot:
    return snapshot(
        [
            region("a-pinned", links=[link("home", 1)]),
            region("b-full", links=[link("home", 1)]),
            region("c-full", links=[link("home", 1)]),
            region("d-far", links=[link("home", 50)]),
            region("home", cordoned=True),
        ],
        [node(f"{name}-1", name, 4) for name in ("a-pinned", "b-full", "c-full", "d-far", "home")],
        datasets=[dataset("home", denied=["a-pinned"])],
    )


def test_job_reason_is_the_region_that_got_furthest() -> None:
    decision = decide(job(max_rtt_ms=20), unplaceable_world())
    assert not decision.placed
    assert decision.reason == Reason.InsufficientCapacity
    # Ties between b-full and c-full go to the name that sorts first.
    assert "closest was b-full" in decision.message
    assert [c.region for c in decision.candidates] == [
        "b-full",
        "c-full",
        "d-far",
        "a-pinned",
        "home",
    ]
    assert decision.nodes == ()
    assert decision.region is None


@pytest.mark.parametrize(
    ("world", "spec", "reason"),
    [
        pytest.param(snapshot([]), job(), Reason.NoRegions, id="no-regions"),
        pytest.param(
            snapshot([region("a")], [node("a-1", "a")]),
            job(dataset_name="missing"),
            Reason.DatasetNotFound,
            id="dataset-not-found",
        ),
    ],
)
def test_job_level_reasons(world: ClusterSnapshot, spec: TrainingJobSpec, reason: str) -> None:
    decision = decide(spec, world)
    assert (decision.placed, decision.reason, decision.candidates) == (False, reason, ())


def test_job_without_dataset_has_no_latency_constraint() -> None:
    world = snapshot([region("island")], [node("i-1", "island")])
    decision = decide(job(dataset_name=None, max_rtt_ms=1, max_loss=0.0), world)
    assert decision.placed
    assert (decision.region, decision.rtt_ms, decision.predicted_loss) == ("island", None, 0.0)


def test_ties_broken_by_region_name() -> None:
    world = snapshot(
        [region("b", links=[link("home", 5)]), region("a", links=[link("home", 5)])],
        [node("b-1", "b"), node("a-1", "a")],
        datasets=[dataset("home")],
    )
    decision = decide(job(), world)
    assert decision.region == "a"
    assert [c.region for c in decision.candidates] == ["a", "b"]
    assert decision.candidates[0].score == decision.candidates[1].score


def objective_world() -> ClusterSnapshot:
    return snapshot(
        [
            region("tokyo", price=3.0, carbon=450),
            region("fukuoka", price=1.0, carbon=500, links=[link("tokyo", 15)]),
            region("sapporo", price=2.5, carbon=50, links=[link("tokyo", 18)]),
        ],
        [node("tk-1", "tokyo"), node("fk-1", "fukuoka"), node("sp-1", "sapporo")],
        datasets=[dataset("tokyo")],
    )


@pytest.mark.parametrize(
    ("objective", "preferred", "expected"),
    [
        pytest.param(Objective.Fastest, [], "tokyo", id="fastest-stays-with-data"),
        pytest.param(Objective.Cheapest, [], "fukuoka", id="cheapest"),
        pytest.param(Objective.Greenest, [], "sapporo", id="greenest"),
        pytest.param(Objective.Balanced, [], "sapporo", id="balanced"),
        pytest.param(Objective.Balanced, ["fukuoka"], "fukuoka", id="preferred-bonus-tips"),
        pytest.param(Objective.Fastest, ["fukuoka"], "tokyo", id="preferred-too-slow-for-fastest"),
        pytest.param(Objective.Greenest, ["tokyo"], "sapporo", id="preferred-too-far-behind"),
    ],
)
def test_objective_changes_choice(
    objective: Objective, preferred: list[str], expected: str
) -> None:
    decision = decide(job(objective=objective, preferred=preferred), objective_world())
    assert decision.region == expected
    scores = [c.score for c in decision.candidates]
    assert scores == sorted(scores, reverse=True)


def test_balanced_scores_by_hand() -> None:
    # Costs per unit of work (slowdown = 1/(1-loss)), excess over the best relative to the worst.
    decision = decide(job(objective=Objective.Balanced), objective_world())
    scores = {c.region: c.score for c in decision.candidates}
    slow = {"tokyo": 1.0, "fukuoka": 1 + 15 / 110, "sapporo": 1 + 18 / 110}
    price = {"tokyo": 3.0, "fukuoka": 1.0 * slow["fukuoka"], "sapporo": 2.5 * slow["sapporo"]}
    carbon = {"tokyo": 450.0, "fukuoka": 500 * slow["fukuoka"], "sapporo": 50 * slow["sapporo"]}

    def excess(values: dict[str, float], name: str) -> float:
        return (values[name] - min(values.values())) / max(values.values())

    for name in slow:
        expected = 1 - (excess(slow, name) + excess(price, name) + excess(carbon, name)) / 3
        assert scores[name] == pytest.approx(expected)


def test_replicated_dataset_reads_nearest_copy() -> None:
    world = snapshot(
        [
            region("tokyo"),
            region("osaka", links=[link("tokyo", 8)]),
            region("fukuoka", links=[link("tokyo", 15), link("osaka", 9)]),
        ],
        [node("tk-1", "tokyo", 0), node("os-1", "osaka", 0), node("fk-1", "fukuoka")],
        datasets=[dataset("tokyo", ResidencyMode.Replicated, replicas=["osaka", "fukuoka"])],
    )
    decision = decide(job(max_rtt_ms=1), world)
    assert decision.region == "fukuoka"
    assert decision.rtt_ms == 0.0  # a replica lives there


def test_nearest_copy_of_remote_access_is_home() -> None:
    world = snapshot(
        [region("tokyo"), region("osaka", links=[link("tokyo", 8)])],
        [node("tk-1", "tokyo", 0), node("os-1", "osaka")],
        datasets=[dataset("tokyo")],
    )
    decision = decide(job(), world)
    assert (decision.region, decision.rtt_ms) == ("osaka", 8.0)
    assert decision.predicted_loss == pytest.approx(8 / 118)


@pytest.mark.parametrize(
    ("settings", "spec", "placed"),
    [
        pytest.param(EngineSettings(), job(), True, id="no-budget"),
        pytest.param(EngineSettings(default_max_rtt_ms=5), job(), False, id="default-rtt"),
        pytest.param(
            EngineSettings(default_max_rtt_ms=5), job(max_rtt_ms=15), True, id="own-rtt-wins"
        ),
        pytest.param(
            EngineSettings(default_max_throughput_loss=0.05), job(), False, id="default-loss"
        ),
        pytest.param(
            EngineSettings(default_max_throughput_loss=0.05),
            job(max_loss=0.2),
            True,
            id="own-loss-wins",
        ),
    ],
)
def test_cluster_default_budgets(
    settings: EngineSettings, spec: TrainingJobSpec, placed: bool
) -> None:
    assert decide(spec, two_regions(rtt_ms=10), settings).placed is placed


def test_nodes_are_best_fit_per_rank() -> None:
    world = snapshot(
        [region("a")],
        [node("a-1", "a", 8), node("a-2", "a", 4), node("a-3", "a", 2)],
    )
    spec = job(dataset_name=None, replicas=3, gpus=2)
    decision = decide(spec, world)
    assert decision.nodes == ("a-3", "a-2", "a-2")
    assert allocations_of(decision, spec) == {"a-3": 2, "a-2": 4}


def test_batch_consumes_capacity() -> None:
    world = snapshot([region("a"), region("b")], [node("a-1", "a"), node("b-1", "b", 4)])
    first, second = job("first", dataset_name=None), job("second", dataset_name=None)
    # Decided independently, both jobs would take the same node...
    assert decide(first, world).nodes == decide(second, world).nodes == ("a-1",)
    # ...which the batch must not allow.
    decisions, after = plan_batch([first, second], world)
    assert decisions[0].nodes == ("a-1",)
    assert not decisions[1].placed
    assert decisions[1].reason == Reason.InsufficientCapacity
    assert after.node_free_gpus("a-1") == 0
    assert world.node_free_gpus("a-1") == 8


def test_alternatives_are_at_most_eight_best_others() -> None:
    names = [f"r{index:02d}" for index in range(12)]
    world = snapshot(
        [region(name, price=1 + index) for index, name in enumerate(names)],
        [node(f"{name}-1", name) for name in names],
    )
    decision = decide(job(dataset_name=None, objective=Objective.Cheapest), world)
    assert decision.region == "r00"
    assert [c.region for c in decision.alternatives] == names[1:9]
    assert decision.candidates[0].reason == Reason.Placed
    assert all(c.reason == Reason.Feasible for c in decision.alternatives)


def test_same_snapshot_same_decision() -> None:
    world = objective_world()
    assert decide(job(), world) == decide(job(), world)


@pytest.mark.parametrize(
    ("spec", "data", "measurements", "expected"),
    [
        pytest.param(job(max_rtt_ms=20), dataset("tokyo"), [], (True, 15.0), id="within"),
        pytest.param(job(max_rtt_ms=10), dataset("tokyo"), [], (False, 15.0), id="over"),
        pytest.param(
            job(max_rtt_ms=20),
            dataset("tokyo"),
            [Measurement("osaka", "tokyo", 20, 3, NOW)],
            (False, 23.0),
            id="measured-over",
        ),
        pytest.param(job(), dataset("tokyo"), [], (True, 15.0), id="no-budget"),
        pytest.param(job(max_rtt_ms=20), None, [], (True, None), id="no-dataset"),
        pytest.param(job(max_rtt_ms=20), dataset("sapporo"), [], (None, None), id="unknown"),
        pytest.param(
            job(max_rtt_ms=1),
            dataset("tokyo", ResidencyMode.Replicated, replicas=["osaka"]),
            [],
            (True, 0.0),
            id="local-replica",
        ),
    ],
)
def test_latency_budget_status(
    spec: TrainingJobSpec,
    data: Any,
    measurements: list[Measurement],
    expected: tuple[bool | None, float | None],
) -> None:
    matrix = LatencyMatrix.build(
        [region("tokyo"), region("osaka", links=[link("tokyo", 15)])], measurements
    )
    assert latency_budget_status(spec, data, "osaka", matrix, NOW) == expected


def test_queue_order_priority_then_age_then_name() -> None:
    jobs = [
        job("late", created_at=20),
        job("urgent", priority=10, created_at=30),
        job("early-b", created_at=10),
        job("early-a", created_at=10),
    ]
    assert [j.name for j in queue_order(jobs)] == ["urgent", "early-a", "early-b", "late"]
