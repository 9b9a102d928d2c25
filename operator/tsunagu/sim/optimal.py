"""The offline `optimal` policy for small instances: the best region for every job, in hindsight.

The search space is every assignment of one region to each job, among the regions the engine
finds feasible for it on an empty cluster (residency, latency and budgets respected). Each
assignment is replayed by the same simulator and engine as the online policies: a job waits
for its region when that is full. Any online policy that respects the same filters is one point
of this space (at every instant it places a job, the region it picks has room, and the assigned
replay makes the same placement at the same instant), so the optimum bounds tsunagu from below.

Depth-first branch and bound over arrivals: the bound adds, for each job not yet started, the
time it has already waited plus its fastest possible run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tsunagu.placement.engine import EngineSettings, decide
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.throughput import slowdown
from tsunagu.sim.policies import AssignedPolicy, feasible
from tsunagu.sim.simulator import Run, SimulationResult, base_snapshot, latency_of, simulate
from tsunagu.sim.topology import Topology
from tsunagu.sim.trace import Trace

DEFAULT_NODE_BUDGET = 200_000
_EPSILON = 1e-6


@dataclass(frozen=True)
class OptimalOutcome:
    result: SimulationResult | None  # None when the search ran out of budget
    explored: int
    complete: bool


class _OutOfBudget(Exception):
    pass


def solve(
    trace: Trace,
    topology: Topology,
    settings: EngineSettings | None = None,
    node_budget: int = DEFAULT_NODE_BUDGET,
    hints: Sequence[SimulationResult] = (),
) -> OptimalOutcome:
    """The assignment with the lowest total (so mean) JCT, found exhaustively.

    `hints` are results of online policies: their region choices, replayed, give the search a
    good first bound to prune with (they never change the optimum it finds).
    """
    settings = settings or EngineSettings()
    latency = latency_of(topology)
    options = _options(trace, topology, settings, latency)
    fastest = [
        job.duration_seconds * slowdown(min((loss for _, loss in choices), default=0.0))
        for job, choices in zip(trace.jobs, options, strict=True)
    ]
    policy = AssignedPolicy(topology.region_names(), {}, settings)
    policy.name = "optimal"
    for job, choices in zip(trace.jobs, options, strict=True):
        # A job with no feasible region never runs; any assignment leaves it waiting.
        if not choices:
            policy.assignment[job.key] = topology.region_names()[0]
    search = _Search(trace, options, fastest, policy, node_budget)
    allowed = [{region for region, _ in choices} for choices in options]
    for hint in hints:
        chosen = {outcome.key: outcome.region for outcome in hint.outcomes}
        if all(
            chosen.get(job.key) in allowed[index]
            for index, job in enumerate(trace.jobs)
            if allowed[index]
        ):
            replay = AssignedPolicy(
                topology.region_names(), {**policy.assignment, **chosen}, settings
            )
            replay.name = policy.name
            search.offer(simulate(trace, topology, replay, latency))
    try:
        search.explore(Run(trace, topology, policy, latency))
    except _OutOfBudget:
        return OptimalOutcome(None, search.explored, complete=False)
    return OptimalOutcome(search.best_result, search.explored, complete=True)


def _options(
    trace: Trace, topology: Topology, settings: EngineSettings, latency: LatencyMatrix
) -> list[list[tuple[str, float]]]:
    """Per job, (region, predicted loss) of every region feasible on an empty cluster."""
    empty = base_snapshot(topology, trace.datasets(), latency)
    order = {name: index for index, name in enumerate(topology.region_names())}
    result = []
    for job in trace.jobs:
        decision = decide(job.spec, empty, settings)
        choices = [(c.region, c.predicted_loss or 0.0) for c in feasible(decision.candidates)]
        choices.sort(key=lambda choice: (choice[1], order.get(choice[0], 0)))
        result.append(choices)
    return result


class _Search:
    def __init__(
        self,
        trace: Trace,
        options: Sequence[Sequence[tuple[str, float]]],
        fastest: Sequence[float],
        policy: AssignedPolicy,
        node_budget: int,
    ) -> None:
        self.jobs = trace.jobs
        self.options = options
        self.fastest = fastest
        self.policy = policy
        self.node_budget = node_budget
        self.explored = 0
        self.best_total = float("inf")
        self.best_result: SimulationResult | None = None

    def offer(self, result: SimulationResult) -> None:
        total = sum(outcome.jct_seconds for outcome in result.outcomes)
        if total < self.best_total:
            self.best_total, self.best_result = total, result

    def lower_bound(self, run: Run) -> float:
        # A job still waiting after this instant can start at the next event at the earliest.
        earliest = run.now if run.done else run.next_time()
        total = 0.0
        for index, job in enumerate(self.jobs):
            outcome = run.outcomes.get(index)
            if outcome is not None:
                total += outcome.jct_seconds
            elif not self.options[index]:
                continue
            elif index < run.next_arrival:
                total += earliest - job.arrival_seconds + self.fastest[index]
            else:
                total += self.fastest[index]
        return total

    def explore(self, run: Run) -> None:
        self.explored += 1
        if self.explored > self.node_budget:
            raise _OutOfBudget
        if self.lower_bound(run) >= self.best_total - _EPSILON:
            return
        if run.done:
            self.offer(run.result())
            return
        arriving = [index for index in run.arrivals_at(run.next_time()) if self.options[index]]
        self._assign(run, arriving, 0)

    def _assign(self, run: Run, arriving: Sequence[int], position: int) -> None:
        if position == len(arriving):
            branch = run.copy()
            branch.step()
            self.explore(branch)
            return
        index = arriving[position]
        for region, _ in self.options[index]:
            self.policy.assignment[self.jobs[index].key] = region
            self._assign(run, arriving, position + 1)
