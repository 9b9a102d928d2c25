"""The discrete-event simulator: replays a trace through a policy on a topology.

Events are arrivals and completions. At each instant the simulator first frees the GPUs of jobs
that complete, then queues the jobs that arrive, then asks the policy to place, in priority then
arrival order, every queued job that could have become placeable: the new arrivals, and the
waiting jobs for which capacity was freed in a region that passed every other filter. (Latency
and regions do not change during a run, so any other waiting job would get the same "no".)

A placed job runs `duration / (1 − loss)` seconds: the loss the engine predicted, or, when the
run knows the jobs' workload classes (`sim/workloads.py`), the class's true loss at that RTT.
Policies that learn are told of each job once, `OBSERVE_AFTER_SECONDS` into its run or when it
finishes if sooner (`observe`): the operator reads a running job's throughput counter the same
way, once it has run long enough for a rate over the query's window.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tsunagu.api.types import DatasetSpec
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.ordering import queue_key
from tsunagu.placement.residency import residency_allows
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import slowdown as slowdown_for_loss
from tsunagu.sim.policies import Attempt, Policy, allocations_of
from tsunagu.sim.topology import Topology
from tsunagu.sim.trace import Trace
from tsunagu.sim.workloads import WorkloadClass

# Budgets compare floats that went through arithmetic (as in the engine).
_BUDGET_TOLERANCE = 1e-9
# Start-up, then a few minutes of steady steps for a rate over the query's window.
OBSERVE_AFTER_SECONDS = 600.0


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job."""

    name: str
    key: tuple[str, str]
    arrival_seconds: float
    start_seconds: float
    end_seconds: float
    region: str
    # (node, GPUs) per rank, as the engine bound them.
    placements: tuple[tuple[str, int], ...]
    predicted_loss: float
    rtt_ms: float | None
    residency_violation: bool
    # The loss the job really ran at: its class's true loss, or the prediction without classes.
    actual_loss: float = 0.0
    max_throughput_loss: float | None = None  # the budget the job ran under
    workload_class: str | None = None

    @property
    def budget_violation(self) -> bool:
        """The job really ran slower than its maxThroughputLoss allowed."""
        budget = self.max_throughput_loss
        return budget is not None and self.actual_loss > budget + _BUDGET_TOLERANCE

    @property
    def gpus(self) -> int:
        return sum(gpus for _, gpus in self.placements)

    @property
    def jct_seconds(self) -> float:
        return self.end_seconds - self.arrival_seconds

    @property
    def queue_seconds(self) -> float:
        return self.start_seconds - self.arrival_seconds

    @property
    def run_seconds(self) -> float:
        return self.end_seconds - self.start_seconds

    @property
    def slowdown(self) -> float:
        return slowdown_for_loss(self.predicted_loss)


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    topology: Topology
    outcomes: tuple[JobOutcome, ...]  # by arrival
    unplaced: tuple[str, ...]  # names of jobs no policy decision ever placed


def latency_of(topology: Topology) -> LatencyMatrix:
    return LatencyMatrix.build(topology.regions)


def base_snapshot(
    topology: Topology, datasets: tuple[DatasetSpec, ...], latency: LatencyMatrix | None = None
) -> ClusterSnapshot:
    return ClusterSnapshot.build(
        topology.regions, topology.nodes, (), datasets, latency or latency_of(topology), now=0.0
    )


class Run:
    """The state of one simulation; `copy()` gives an independent branch (used by `optimal`)."""

    def __init__(
        self,
        trace: Trace,
        topology: Topology,
        policy: Policy,
        latency: LatencyMatrix | None = None,
        classes: Mapping[str, WorkloadClass] | None = None,
    ) -> None:
        self.policy = policy
        self.classes = dict(classes or {})
        self.topology = topology
        self.jobs = trace.jobs
        self.datasets = {job.key: job.dataset for job in trace.jobs}
        self.base = base_snapshot(topology, policy.datasets_view(trace.datasets()), latency)
        self.node_region = {node.name: node.region or "" for node in topology.nodes}
        self.now = 0.0
        self.next_arrival = 0
        self.completions: list[tuple[float, int, str]] = []  # (end, arrival index, region)
        self.in_use: dict[str, int] = {}
        self.running: dict[int, dict[str, int]] = {}
        self.waiting: dict[int, frozenset[str]] = {}  # arrival index → regions it waits on
        self.outcomes: dict[int, JobOutcome] = {}
        self.observed: set[int] = set()

    def copy(self) -> Run:
        clone = copy.copy(self)
        clone.completions = list(self.completions)
        clone.in_use = dict(self.in_use)
        clone.running = dict(self.running)
        clone.waiting = dict(self.waiting)
        clone.outcomes = dict(self.outcomes)
        clone.observed = set(self.observed)
        return clone

    @property
    def done(self) -> bool:
        return self.next_arrival >= len(self.jobs) and not self.completions

    def next_time(self) -> float:
        times = [self.completions[0][0]] if self.completions else []
        if self.next_arrival < len(self.jobs):
            times.append(self.jobs[self.next_arrival].arrival_seconds)
        return min(times)

    def arrivals_at(self, when: float) -> list[int]:
        index = self.next_arrival
        while index < len(self.jobs) and self.jobs[index].arrival_seconds <= when:
            index += 1
        return list(range(self.next_arrival, index))

    def step(self) -> None:
        """Processes every event of the next instant."""
        now = self.next_time()
        self.now = now
        freed: set[str] = set()
        while self.completions and self.completions[0][0] <= now:
            _, index, region = heapq.heappop(self.completions)
            for node, gpus in self.running.pop(index).items():
                self.in_use[node] -= gpus
            freed.add(region)
            self._observe(index)
        for index in list(self.running):
            if self.outcomes[index].start_seconds + OBSERVE_AFTER_SECONDS <= now:
                self._observe(index)
        arrived = self.arrivals_at(now)
        self.next_arrival += len(arrived)
        retry = [index for index, regions in self.waiting.items() if regions & freed]
        candidates = sorted(arrived + retry, key=lambda index: queue_key(self.jobs[index].spec))
        if candidates:
            self._place(candidates, now)

    def _observe(self, index: int) -> None:
        observe = getattr(self.policy, "observe", None)
        if observe is not None and index not in self.observed:
            self.observed.add(index)
            observe(self.outcomes[index])

    def _place(self, indexes: Sequence[int], now: float) -> None:
        snapshot = self.base.with_allocations({n: g for n, g in self.in_use.items() if g})
        attempts, _ = self.policy.attempt([self.jobs[index] for index in indexes], snapshot)
        for index, attempt in zip(indexes, attempts, strict=True):
            if attempt.decision.placed:
                self._start(index, attempt, now)
                self.waiting.pop(index, None)
            else:
                self.waiting[index] = attempt.waiting_on

    def _start(self, index: int, attempt: Attempt, now: float) -> None:
        job, decision = attempt.job, attempt.decision
        allocations = allocations_of(decision, job)
        region = decision.region or ""
        loss = decision.predicted_loss or 0.0
        workload = self.classes.get(job.spec.workload_class or "")
        actual = loss if workload is None else workload.true_loss(decision.rtt_ms)
        end = now + job.duration_seconds * slowdown_for_loss(actual)
        for node, gpus in allocations.items():
            self.in_use[node] = self.in_use.get(node, 0) + gpus
        self.running[index] = allocations
        heapq.heappush(self.completions, (end, index, region))
        dataset = self.datasets[job.key]
        self.outcomes[index] = JobOutcome(
            name=job.spec.name,
            key=job.key,
            arrival_seconds=job.arrival_seconds,
            start_seconds=now,
            end_seconds=end,
            region=region,
            placements=tuple((node, job.spec.gpus_per_replica) for node in decision.nodes),
            predicted_loss=loss,
            rtt_ms=decision.rtt_ms,
            residency_violation=dataset is not None and not residency_allows(dataset, region),
            actual_loss=actual,
            max_throughput_loss=job.spec.placement.max_throughput_loss,
            workload_class=job.spec.workload_class,
        )

    def result(self) -> SimulationResult:
        outcomes = tuple(self.outcomes[index] for index in sorted(self.outcomes))
        unplaced = tuple(
            self.jobs[index].spec.name
            for index in range(len(self.jobs))
            if index not in self.outcomes
        )
        return SimulationResult(self.policy.name, self.topology, outcomes, unplaced)


def simulate(
    trace: Trace,
    topology: Topology,
    policy: Policy,
    latency: LatencyMatrix | None = None,
    classes: Mapping[str, WorkloadClass] | None = None,
) -> SimulationResult:
    """Replays `trace` through `policy` until every job has finished or can never be placed."""
    run = Run(trace, topology, policy, latency, classes)
    while not run.done:
        run.step()
    return run.result()
