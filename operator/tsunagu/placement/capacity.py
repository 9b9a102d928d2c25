"""Gang fit and best-fit packing of replicas onto nodes.

A region's free capacity is summarised as a histogram {free GPUs: number of nodes}, which makes
"does the whole gang fit?" a handful of integer operations however many nodes the region has.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

FreeHistogram = Mapping[int, int]


def replica_slots(histogram: FreeHistogram, gpus_per_replica: int) -> int:
    """How many replicas of `gpus_per_replica` GPUs the nodes of the histogram can hold.

    Best-fit packing takes exactly one slot per replica (a node with f free GPUs offers
    ⌊f / g⌋ slots and keeps ⌊f / g⌋ - 1 after taking g), so a gang of n replicas fits if and only
    if there are at least n slots.
    """
    if gpus_per_replica <= 0:
        return sys.maxsize if any(histogram.values()) else 0
    return sum(count * (free // gpus_per_replica) for free, count in histogram.items())


def pack_gang(
    free_by_node: Iterable[tuple[str, int]], replicas: int, gpus_per_replica: int
) -> tuple[str, ...] | None:
    """The node of each rank by best-fit packing, or None when the gang does not fit.

    Each replica goes to the node with the fewest free GPUs that still fits it, ties by node
    name. Taking GPUs from that node only makes it a tighter fit, so it keeps receiving replicas
    until it can hold no more, which lets one sorted pass do the whole gang.
    """
    if replicas <= 0:
        return ()
    needed = max(gpus_per_replica, 0)
    ordered = sorted((free, name) for name, free in free_by_node if free >= needed)
    ranks: list[str] = []
    for free, name in ordered:
        fits = replicas if needed == 0 else free // needed
        ranks.extend([name] * min(fits, replicas - len(ranks)))
        if len(ranks) == replicas:
            return tuple(ranks)
    return None


def add_to_histogram(histogram: dict[int, int], free: int, count: int) -> None:
    remaining = histogram.get(free, 0) + count
    if remaining:
        histogram[free] = remaining
    else:
        del histogram[free]
