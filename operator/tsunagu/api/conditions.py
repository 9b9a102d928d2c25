"""Condition types and the CamelCase reasons tsunagu writes to status, Events and metrics."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

SCHEDULED: Final = "Scheduled"
RUNNING: Final = "Running"
FINISHED: Final = "Finished"
LATENCY_BUDGET_MET: Final = "LatencyBudgetMet"
RESIDENCY_VIOLATED: Final = "ResidencyViolated"
# Only on a job placed in a member cluster: whether the hub can reach the member now.
CLUSTER_REACHABLE: Final = "ClusterReachable"

CONDITION_TYPES: Final = (
    SCHEDULED, RUNNING, FINISHED, LATENCY_BUDGET_MET, RESIDENCY_VIOLATED, CLUSTER_REACHABLE,
)  # fmt: skip


class Reason(StrEnum):
    """Machine-readable reasons; the value is what goes on the wire."""

    # Scheduled=True, and the verdict of the chosen region.
    Placed = "Placed"
    # Verdict of a region that passed every filter but was not chosen.
    Feasible = "Feasible"
    # Region filters, in the order the engine applies them (see FILTER_ORDER).
    RegionUnavailable = "RegionUnavailable"
    RegionExcluded = "RegionExcluded"
    DataResidency = "DataResidency"
    LatencyUnknown = "LatencyUnknown"
    LatencyBudget = "LatencyBudget"
    ThroughputLossBudget = "ThroughputLossBudget"
    InsufficientCapacity = "InsufficientCapacity"
    # Job-level reasons for Scheduled=False.
    NoRegions = "NoRegions"
    DatasetNotFound = "DatasetNotFound"
    InvalidSpec = "InvalidSpec"
    Pending = "Pending"
    # Running.
    PodsRunning = "PodsRunning"
    PodsStarting = "PodsStarting"
    # Finished.
    Succeeded = "Succeeded"
    Failed = "Failed"
    Restarting = "Restarting"
    # LatencyBudgetMet.
    WithinBudget = "WithinBudget"
    OverBudget = "OverBudget"
    Requeued = "Requeued"
    # ResidencyViolated: the dataset's rules changed under a running job.
    OutsideResidency = "OutsideResidency"
    WithinResidency = "WithinResidency"
    # ClusterReachable (the member's own reasons when it cannot be used: lifecycle.members).
    Connected = "Connected"
    ClusterUnreachable = "ClusterUnreachable"


# A region that fails an earlier filter is never tested against a later one, so the position of
# its reason here says how far it got.
FILTER_ORDER: Final[tuple[Reason, ...]] = (
    Reason.RegionUnavailable,
    Reason.RegionExcluded,
    Reason.DataResidency,
    Reason.LatencyUnknown,
    Reason.LatencyBudget,
    Reason.ThroughputLossBudget,
    Reason.InsufficientCapacity,
)
