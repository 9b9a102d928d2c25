"""Node/pod GPU accounting in the snapshot, gang fit, best-fit packing and with_allocations."""

from __future__ import annotations

import pytest

from tests.unit.test_placement_fixtures import node, pod, region, snapshot
from tsunagu.placement.capacity import pack_gang, replica_slots


@pytest.mark.parametrize(
    ("histogram", "gpus", "slots"),
    [
        pytest.param({8: 3}, 8, 3, id="whole-nodes"),
        pytest.param({8: 3}, 4, 6, id="two-per-node"),
        pytest.param({8: 1, 3: 2}, 4, 2, id="fragments-do-not-add-up"),
        pytest.param({7: 2}, 8, 0, id="one-short"),
        pytest.param({}, 1, 0, id="no-nodes"),
    ],
)
def test_replica_slots(histogram: dict[int, int], gpus: int, slots: int) -> None:
    assert replica_slots(histogram, gpus) == slots


@pytest.mark.parametrize(
    ("free", "replicas", "gpus", "expected"),
    [
        pytest.param({"n1": 8, "n2": 4, "n3": 6}, 1, 4, ("n2",), id="fewest-free-that-fits"),
        pytest.param({"b": 4, "a": 4}, 2, 4, ("a", "b"), id="ties-by-name"),
        pytest.param({"n1": 8, "n2": 2}, 2, 4, ("n1", "n1"), id="fills-a-node-first"),
        pytest.param({"n1": 8, "n2": 5, "n3": 4}, 3, 4, ("n3", "n2", "n1"), id="smallest-first"),
        pytest.param({"n1": 8, "n2": 9}, 4, 4, ("n1", "n1", "n2", "n2"), id="whole-gang"),
        pytest.param({"n1": 7, "n2": 7}, 2, 8, None, id="does-not-fit"),
        pytest.param({"n1": 8}, 0, 8, (), id="empty-gang"),
    ],
)
def test_pack_gang(
    free: dict[str, int], replicas: int, gpus: int, expected: tuple[str, ...] | None
) -> None:
    assert pack_gang(free.items(), replicas, gpus) == expected


def test_snapshot_counts_pods_against_node_gpus() -> None:
    snap = snapshot(
        [region("a")],
        [node("n1", "a", 8), node("n2", "a", 8), node("n3", "a", 4, schedulable=False)],
        pods=[
            pod("p1", "n1", 3),
            pod("p2", "n1", 2),
            pod("done", "n2", 8, terminal=True),
            pod("unbound", None, 8),
            pod("elsewhere", "ghost", 8),
        ],
    )
    assert snap.node_free_gpus("n1") == 3
    assert snap.node_free_gpus("n2") == 8
    assert snap.node_free_gpus("n3") is None
    capacity = snap.capacity("a")
    assert (capacity.nodes, capacity.ready_nodes) == (3, 2)
    assert (capacity.gpu_capacity, capacity.gpu_allocatable) == (20, 16)
    assert (capacity.gpu_allocated, capacity.gpu_free) == (5, 11)
    assert snap.replica_slots("a", None, 3) == 3


def test_overcommitted_node_has_zero_free() -> None:
    snap = snapshot([region("a")], [node("n1", "a", 4)], pods=[pod("p", "n1", 6)])
    assert snap.node_free_gpus("n1") == 0


def test_region_membership_by_label_and_selector() -> None:
    snap = snapshot(
        [region("a"), region("b", node_selector={"site": "b1"}), region("c")],
        [
            node("labelled-a", "a"),
            node("selected-b", "a", labels={"site": "b1"}),
            node("labelled-b-not-selected", "b"),
            node("no-region", None),
        ],
    )
    assert snap.nodes_of("a") == ("labelled-a",)
    assert snap.nodes_of("b") == ("selected-b",)
    assert snap.nodes_of("c") == ()
    assert snap.node_region("labelled-b-not-selected") is None
    assert snap.node_region("no-region") is None
    assert not snap.is_available("c")


@pytest.mark.parametrize(
    ("product", "slots"),
    [
        pytest.param("H100", 2, id="h100"),
        pytest.param("A100", 1, id="a100"),
        pytest.param("L4", 0, id="absent-product"),
        pytest.param(None, 3, id="any-product"),
    ],
)
def test_gpu_product_filters_nodes(product: str | None, slots: int) -> None:
    snap = snapshot(
        [region("a")],
        [
            node("h1", "a", product="H100"),
            node("h2", "a", product="H100"),
            node("a1", "a", product="A100"),
        ],
    )
    assert snap.replica_slots("a", product, 8) == slots
    packed = snap.pack("a", product, slots, 8)
    assert packed is not None
    assert len(packed) == slots


def test_with_allocations_copies_only_what_it_touches() -> None:
    before = snapshot(
        [region("a"), region("b")],
        [node("a1", "a", 8, product="H100"), node("a2", "a", 8), node("b1", "b", 8)],
    )
    after = before.with_allocations({"a1": 6, "b1": 0, "ghost": 4})
    assert before.node_free_gpus("a1") == 8
    assert after.node_free_gpus("a1") == 2
    assert after.node_free_gpus("a2") == 8
    assert after.replica_slots("a", "H100", 4) == 0
    assert after.replica_slots("a", None, 2) == 5
    assert before.replica_slots("a", None, 2) == 8
    assert after.capacity("a").gpu_allocated == 6
    # Untouched regions are shared, not copied.
    assert after._regions["b"] is before._regions["b"]
    assert before.with_allocations({}) is before


def test_with_allocations_never_goes_negative() -> None:
    after = snapshot([region("a")], [node("a1", "a", 4)]).with_allocations({"a1": 9})
    assert after.node_free_gpus("a1") == 0
    assert after.capacity("a").gpu_free == 0
