"""`tsunagu-learning`: the engine with throughput models learned online from finished jobs.

Each job, once it has run a while (`sim/simulator.OBSERVE_AFTER_SECONDS`), reports the throughput
it achieves at the RTT it had (with measurement
noise, `sim/workloads.observed_throughput`); the policy keeps the most recent samples of each
workload class and refits the class with `tsunagu.placement.calibration`, exactly as the operator
would from a ThroughputProfile. A trusted fit goes to the engine through
`EngineSettings.fitted_models`.

Until its class is trusted, a job that has a throughput-loss budget runs only next to a copy of
its data, where the loss is zero by definition: a guess must never break a budget. Jobs without a
budget are placed as the engine places them with the reference curve, and they are the ones
whose remote runs teach the policy the shape of the curve.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tsunagu.api.profiles import MAX_PROFILE_SAMPLES, ThroughputSample
from tsunagu.api.types import DatasetSpec, TrainingJobSpec
from tsunagu.placement.calibration import Calibration, calibrate
from tsunagu.placement.engine import EngineSettings, plan_batch
from tsunagu.placement.residency import data_sites
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import FittedModel
from tsunagu.sim.policies import Attempt, capacity_blocked
from tsunagu.sim.simulator import JobOutcome
from tsunagu.sim.trace import TraceJob
from tsunagu.sim.workloads import WorkloadClass, observed_throughput

DEFAULT_NOISE = 0.01
MIN_MARGIN = 0.01


class LearningPolicy:
    name = "tsunagu-learning"

    def __init__(
        self,
        regions: Sequence[str],
        classes: Mapping[str, WorkloadClass],
        settings: EngineSettings | None = None,
        seed: int = 1,
        noise: float = DEFAULT_NOISE,
    ) -> None:
        self.regions = tuple(regions)
        self.classes = dict(classes)
        self.settings = settings or EngineSettings()
        self.rng = random.Random(seed)
        self.noise = noise
        self.samples: dict[str, list[ThroughputSample]] = {}
        self.calibrations: dict[str, Calibration] = {}
        self.fitted: dict[str, FittedModel] = {}
        self.datasets: dict[str, DatasetSpec] = {}

    def datasets_view(self, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        return datasets

    def attempt(
        self, jobs: Sequence[TraceJob], snapshot: ClusterSnapshot
    ) -> tuple[list[Attempt], ClusterSnapshot]:
        settings = replace(self.settings, fitted_models=dict(self.fitted))
        specs = [self._spec(job, settings) for job in jobs]
        decisions, after = plan_batch(specs, snapshot, settings)
        attempts = [
            Attempt(job, decision, capacity_blocked(decision.candidates))
            for job, decision in zip(jobs, decisions, strict=True)
        ]
        return attempts, after

    def _spec(self, job: TraceJob, settings: EngineSettings) -> TrainingJobSpec:
        spec = job.spec
        if job.dataset is None or settings.max_throughput_loss(spec) is None:
            return spec
        learned = self.fitted.get(spec.workload_class or "")
        if learned is not None and learned.trusted:
            # A fit is right to about its RMS error, and a fit on few samples underestimates
            # that: keep at least a point clear of the budget.
            budget = settings.max_throughput_loss(spec) or 0.0
            kept = max(budget - max(learned.rms_error, MIN_MARGIN), 0.0)
            return replace(spec, placement=replace(spec.placement, max_throughput_loss=kept))
        sites = set(data_sites(job.dataset))
        away = tuple(region for region in self.regions if region not in sites)
        excluded = tuple(dict.fromkeys((*spec.placement.excluded_regions, *away)))
        return replace(spec, placement=replace(spec.placement, excluded_regions=excluded))

    def observe(self, outcome: JobOutcome) -> None:
        """A job has run a while: record what its counter shows, and refit its class."""
        name = outcome.workload_class
        workload = self.classes.get(name or "")
        if name is None or workload is None:
            return
        throughput = observed_throughput(workload, outcome.rtt_ms, self.rng, self.noise)
        samples = self.samples.setdefault(name, [])
        samples.append(ThroughputSample(outcome.rtt_ms or 0.0, throughput, region=outcome.region))
        del samples[:-MAX_PROFILE_SAMPLES]
        calibration = calibrate(samples, workload_class=name)
        self.calibrations[name] = calibration
        if calibration.fitted is not None:
            self.fitted[name] = calibration.fitted
