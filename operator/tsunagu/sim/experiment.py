"""One `tsunagu simulate` run: resolve topology and trace, replay every policy, summarise."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tsunagu.placement.latency import LatencyMatrix
from tsunagu.sim import optimal
from tsunagu.sim import topology as builtin
from tsunagu.sim.errors import SimInputError
from tsunagu.sim.learning import LearningPolicy
from tsunagu.sim.policies import standard_policies
from tsunagu.sim.report import document, table
from tsunagu.sim.simulator import SimulationResult, latency_of, simulate
from tsunagu.sim.statistics import PolicySummary, summarize
from tsunagu.sim.topology import Topology
from tsunagu.sim.topology_file import load_topology
from tsunagu.sim.trace import Trace, TraceParameters, generate
from tsunagu.sim.trace_file import check_regions, load_trace
from tsunagu.sim.workloads import BUILT_IN as BUILT_IN_CLASSES
from tsunagu.sim.workloads import assign_classes

DEFAULT_JOBS = {"small": 8}
DEFAULT_JOBS_OTHERWISE = 300
OPTIMAL_AUTO_MAX_JOBS = 10
OPTIMAL_AUTO_MAX_REGIONS = 6


@dataclass(frozen=True)
class ExperimentConfig:
    topology: str = "japan"
    trace_path: str | None = None
    seed: int = 1
    jobs: int | None = None
    load: float | None = None
    optimal: str = "auto"  # auto | always | never
    # Workload classes with true sensitivities the policies are not told (sim/workloads.py).
    classes: str | None = None
    # Synthetic trace: the maxThroughputLoss values jobs draw from (None: the trace's default).
    loss_budgets: tuple[float | None, ...] | None = None


@dataclass(frozen=True)
class Experiment:
    config: ExperimentConfig
    topology: Topology
    trace: Trace
    latency: LatencyMatrix
    results: dict[str, SimulationResult]
    summaries: tuple[PolicySummary, ...]
    notes: tuple[str, ...] = field(default=())
    optimal_explored: int | None = None

    def summary(self, policy: str) -> PolicySummary | None:
        return next((s for s in self.summaries if s.policy == policy), None)

    def json(self) -> str:
        context: dict[str, object] = {
            "topology": self.topology.name,
            "regions": len(self.topology.regions),
            "gpus": self.topology.total_gpus(),
            "jobs": len(self.trace.jobs),
            "seed": None if self.config.trace_path else self.config.seed,
        }
        unplaced = {s.policy: s.unplaced for s in self.summaries if s.unplaced}
        if unplaced:
            context["unplacedJobs"] = unplaced
        if self.optimal_explored is not None:
            context["optimalSearchNodes"] = self.optimal_explored
        return document(self.summaries, context)

    def table(self, elapsed_seconds: float | None = None) -> str:
        return table(self.summaries, self._describe(elapsed_seconds))

    def _describe(self, elapsed_seconds: float | None) -> list[str]:
        source = (
            f"trace {self.config.trace_path}"
            if self.config.trace_path
            else f"synthetic trace, seed {self.config.seed}"
        )
        span = max((job.arrival_seconds for job in self.trace.jobs), default=0.0) / 3600
        lines = [
            "",
            f"topology {self.topology.name}: {len(self.topology.regions)} regions, "
            f"{self.topology.total_gpus()} GPUs; {_count(len(self.trace.jobs), 'job')} "
            f"arriving over {span:.1f} h ({source})",
        ]
        ours, home = self.summary("tsunagu"), self.summary("home-only")
        if ours and home and home.mean_jct_seconds > 0:
            change = ours.mean_jct_seconds / home.mean_jct_seconds - 1
            lines.append(f"tsunagu mean JCT vs home-only: {change:+.1%}")
        learning = self.summary(LearningPolicy.name)
        if ours and learning and ours.mean_jct_seconds > 0:
            change = learning.mean_jct_seconds / ours.mean_jct_seconds - 1
            lines.append(
                f"{LearningPolicy.name} mean JCT vs tsunagu (reference curve): {change:+.1%}; "
                f"budget violations in fact {learning.budget_violations} vs "
                f"{ours.budget_violations}"
            )
        best = self.summary("optimal")
        if ours and best and best.mean_jct_seconds > 0:
            gap = ours.mean_jct_seconds / best.mean_jct_seconds - 1
            lines.append(f"tsunagu mean JCT vs optimal: {gap:+.1%}")
        unplaced = [f"{s.policy} {s.unplaced}" for s in self.summaries if s.unplaced]
        if unplaced:
            lines.append(f"jobs never placed (left out of the means): {', '.join(unplaced)}")
        lines += list(self.notes)
        if elapsed_seconds is not None:
            lines.append(f"simulated in {elapsed_seconds:.1f} s")
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def resolve_topology(name: str) -> Topology:
    factory = builtin.BUILT_IN.get(name)
    if factory is not None:
        return factory()
    if not Path(name).is_file():
        raise SimInputError(
            name, "--topology", "is neither a built-in topology (japan, small) nor a file"
        )
    return load_topology(name)


def resolve_trace(config: ExperimentConfig, topology: Topology) -> Trace:
    if config.trace_path:
        trace = load_trace(config.trace_path)
        check_regions(config.trace_path, trace, topology)
        return trace.head(config.jobs) if config.jobs else trace
    jobs = config.jobs or DEFAULT_JOBS.get(config.topology, DEFAULT_JOBS_OTHERWISE)
    parameters = TraceParameters(jobs=jobs)
    if config.load is not None:
        parameters = replace(parameters, load=config.load)
    if config.loss_budgets is not None:
        parameters = replace(parameters, max_loss_choices=config.loss_budgets)
    try:
        return generate(topology, parameters, config.seed)
    except ValueError as error:
        raise SimInputError(config.topology, "regions", str(error)) from None


def _wants_optimal(config: ExperimentConfig, topology: Topology, trace: Trace) -> bool:
    if config.optimal == "never":
        return False
    if config.optimal == "always":
        return True
    return (
        len(trace.jobs) <= OPTIMAL_AUTO_MAX_JOBS
        and len(topology.regions) <= OPTIMAL_AUTO_MAX_REGIONS
    )


def run_experiment(config: ExperimentConfig) -> Experiment:
    topology = resolve_topology(config.topology)
    trace = resolve_trace(config, topology)
    latency = latency_of(topology)
    classes = {}
    if config.classes is not None:
        if config.classes not in BUILT_IN_CLASSES:
            raise SimInputError(config.classes, "--classes", "is not a built-in class mix (mixed)")
        mix = BUILT_IN_CLASSES[config.classes]
        classes = {workload.name: workload for workload in mix}
        trace = assign_classes(trace, mix, config.seed)
    results: dict[str, SimulationResult] = {}
    policies = standard_policies(topology.region_names())
    if classes:
        policies.insert(1, LearningPolicy(topology.region_names(), classes, seed=config.seed))
    for policy in policies:
        results[policy.name] = simulate(trace, topology, policy, latency, classes)
    notes: list[str] = []
    explored = None
    if classes and config.optimal != "never":
        # The search bounds run times by predicted losses; with true classes it bounds nothing.
        notes.append("optimal: not run with workload classes")
    elif _wants_optimal(config, topology, trace):
        outcome = optimal.solve(trace, topology, hints=tuple(results.values()))
        explored = outcome.explored
        if outcome.result is not None:
            results["optimal"] = outcome.result
        else:
            notes.append(f"optimal: search stopped after {outcome.explored} nodes, not reported")
    summaries = tuple(summarize(result, in_fact=bool(classes)) for result in results.values())
    return Experiment(config, topology, trace, latency, results, summaries, tuple(notes), explored)
