"""Workload classes with true sensitivities to RTT that no policy is told.

With classes, a job's run is stretched by its class's *true* loss at the RTT it got, not by the
loss the engine predicted, so a policy that misjudges a class pays for it in completion time and
in budget violations in fact. The observed throughput a job reports is what a learning policy
sees (`observed_throughput`), with measurement noise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tsunagu.placement.throughput import REFERENCE_K, curve_loss
from tsunagu.sim.trace import Trace


@dataclass(frozen=True)
class WorkloadClass:
    """A class whose loss is `x / (1 + x)`, `x = k · max(0, rtt − hidden)`, the learned curve's
    family; `baseline` is its throughput next to the data (samples/s per job, arbitrary)."""

    name: str
    k: float
    hidden_rtt_ms: float = 0.0
    baseline: float = 1000.0
    share: float = 1.0  # of the jobs of a trace

    def true_loss(self, rtt_ms: float | None) -> float:
        return curve_loss(self.k, self.hidden_rtt_ms, rtt_ms or 0.0)


# Tenfold apart: a job that streams large sequential records and computes long per step loses
# ~2.6 % at 15 ms; a chatty many-small-files job loses ~22 %. The reference curve (12 % at
# 15 ms) sits between them and is right for neither.
MIXED = (
    WorkloadClass("llm-pretrain", REFERENCE_K / 5, share=0.4),
    WorkloadClass("vision", REFERENCE_K * 0.6, hidden_rtt_ms=4.0, share=0.3),
    WorkloadClass("small-files", REFERENCE_K * 2, share=0.3),
)
BUILT_IN = {"mixed": MIXED}


def assign_classes(trace: Trace, classes: Sequence[WorkloadClass], seed: int) -> Trace:
    """The trace with each job given a class, drawn by share with a fixed seed."""
    rng = random.Random(seed * 7919 + 17)
    names = [workload.name for workload in classes]
    weights = [workload.share for workload in classes]
    jobs = [
        replace(job, spec=replace(job.spec, workload_class=rng.choices(names, weights)[0]))
        for job in trace.jobs
    ]
    return Trace(tuple(jobs))


def observed_throughput(
    workload: WorkloadClass, rtt_ms: float | None, rng: random.Random, noise: float
) -> float:
    """What the job's counter would show: the true throughput with relative Gaussian noise."""
    clean = workload.baseline * (1.0 - workload.true_loss(rtt_ms))
    return max(clean * (1.0 + rng.gauss(0.0, noise)), 0.0)
