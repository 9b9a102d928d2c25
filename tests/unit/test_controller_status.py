"""Status bookkeeping: conditions keyed by type, merge patches, queue order, assume cache."""

from __future__ import annotations

import asyncio

import pytest

from tsunagu.api.types import PodUsage, TrainingJobSpec
from tsunagu.controller.report.status import ConditionUpdate, merge_conditions
from tsunagu.controller.report.statusbook import merge_patch
from tsunagu.controller.scheduling.assume import AssumeCache
from tsunagu.controller.scheduling.queue import SchedulingQueue


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = merge_conditions(
        [], [ConditionUpdate("Scheduled", False, "LatencyBudget", "m")], 1, 100.0
    )
    same = merge_conditions(
        first, [ConditionUpdate("Scheduled", False, "InsufficientCapacity", "n")], 2, 200.0
    )
    flipped = merge_conditions(same, [ConditionUpdate("Scheduled", True, "Placed", "ok")], 2, 300.0)
    assert first[0]["lastTransitionTime"] == same[0]["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    assert same[0]["reason"] == "InsufficientCapacity"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "1970-01-01T00:05:00Z"


def test_conditions_are_keyed_by_type_in_a_stable_order() -> None:
    conditions = merge_conditions(
        [],
        [
            ConditionUpdate("Finished", True, "Succeeded", ""),
            ConditionUpdate("Scheduled", True, "Placed", ""),
            ConditionUpdate("Running", None, "PodsStarting", ""),
            ConditionUpdate("Scheduled", True, "Placed", "again"),
        ],
        1,
        0.0,
    )
    assert [c["type"] for c in conditions] == ["Scheduled", "Running", "Finished"]
    assert conditions[1]["status"] == "Unknown"
    assert conditions[0]["message"] == "again"


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        pytest.param({}, {}, {}, id="nothing"),
        pytest.param({"a": 1}, {"a": 1}, {}, id="unchanged"),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, {"b": None}, id="removed-key-is-null"),
        pytest.param(
            {"p": {"region": "x", "rttMs": 3}}, {"p": {"region": "y"}},
            {"p": {"region": "y", "rttMs": None}}, id="nested-map-merges",
        ),
        pytest.param({"c": [1, 2]}, {"c": [1]}, {"c": [1]}, id="lists-are-replaced"),
    ],
)  # fmt: skip
def test_merge_patch_turns_old_into_new(old: dict, new: dict, patch: dict) -> None:
    assert merge_patch(old, new) == patch


def _job(name: str, priority: int, created: float) -> TrainingJobSpec:
    return TrainingJobSpec("ns", name, None, 1, 1, priority=priority, created_at=created)


def test_queue_orders_by_priority_then_age_then_name() -> None:
    async def scenario() -> list[str]:
        queue = SchedulingQueue()
        for job in (_job("c", 0, 5), _job("a", 0, 5), _job("old", 0, 1), _job("urgent", 9, 10)):
            queue.add(job)
        queue.remove(("ns", "missing"))
        return [job.name for job in queue.ordered()]

    assert asyncio.run(scenario()) == ["urgent", "old", "a", "c"]


def test_queue_wakes_for_a_new_or_changed_job_not_for_the_same_job_again() -> None:
    async def wakes_after(*jobs: TrainingJobSpec) -> bool:
        queue = SchedulingQueue()
        queue.add(_job("a", 0, 1))
        await queue.wait(0)
        for job in jobs:
            queue.add(job)
        return queue._wake.is_set()

    assert asyncio.run(wakes_after(_job("b", 0, 2)))
    assert asyncio.run(wakes_after(_job("a", 5, 1)))  # priority changed
    assert not asyncio.run(wakes_after(_job("a", 0, 1)))


def test_assumed_pods_expire_after_their_time_to_live() -> None:
    cache = AssumeCache(ttl_seconds=10)
    pod = PodUsage("ns", "j-0", "node-1", 8, False)
    cache.assume(("ns", "j"), (pod,), now=100.0)
    assert cache.pods(now=105.0) == [pod]
    assert cache.pods(now=111.0) == []
    assert ("ns", "j") not in cache


def test_status_book_hands_out_copies() -> None:
    from tsunagu.controller.report.statusbook import StatusBook

    book = StatusBook(kube=None)  # type: ignore[arg-type]  # seed and read never call the API
    book.seed(("team", "a"), {"conditions": [{"type": "Scheduled", "status": "True"}]})
    book.seed(("team", "a"), {"conditions": []})  # only the first sighting counts
    current = book.current(("team", "a"))
    current["conditions"].clear()
    condition = book.condition(("team", "a"), "Scheduled")
    assert condition == {"type": "Scheduled", "status": "True"}
    assert book.current(("team", "b")) == {}


def test_status_documents_carry_plain_strings_not_the_engines_enums() -> None:
    import marshal

    from tsunagu.api.conditions import Reason
    from tsunagu.controller.report.status import (
        ConditionUpdate,
        alternative_entry,
        merge_conditions,
    )
    from tsunagu.placement.engine import Candidate

    entry = alternative_entry(
        Candidate("osaka", False, Reason.InsufficientCapacity, "full", None, None, None)
    )
    conditions = merge_conditions(
        [], [ConditionUpdate("Scheduled", False, Reason.InsufficientCapacity, "full")], 1, 0.0
    )
    assert type(entry["reason"]) is str
    assert type(conditions[0]["reason"]) is str
    marshal.dumps({"alternatives": [entry], "conditions": conditions})  # no enum left inside
