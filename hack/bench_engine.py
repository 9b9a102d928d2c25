#!/usr/bin/env python3
"""Benchmark of the placement engine: decisions per second and latency per decision.

A synthetic country of regions (random sites in Japan, declared links over the whole mesh, fresh
measurements on half the pairs), nodes with a mix of GPU products, pods already holding part of
the GPUs, datasets in every residency mode, and a backlog of jobs that is planned one job at a
time, each placed job consuming its pods' resources (decide + with_decision, as `plan_batch`
does).

    .venv/bin/python hack/bench_engine.py            # full run: 47 regions × 5,000 nodes, 10k jobs
    .venv/bin/python hack/bench_engine.py --quick    # a short run
    .venv/bin/python hack/bench_engine.py --profile  # plus the top of a cProfile of the main run

Prints markdown tables. Goal: p99 ≤ 10 ms per decision and ≥ 500 decisions/s at 47 × 5,000.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import platform
import pstats
import random
import statistics
import sys
import time
from dataclasses import dataclass

from tsunagu.api.types import (
    DatasetSpec,
    DeclaredLink,
    GeoPoint,
    LinkKind,
    NodeInfo,
    Objective,
    PlacementPolicy,
    PodUsage,
    RegionSpec,
    Residency,
    ResidencyMode,
    TrainingJobSpec,
)
from tsunagu.placement.engine import EngineSettings, decide, with_decision
from tsunagu.placement.latency import LatencyMatrix, Measurement
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import fibre_floor_ms

NOW = 1_750_000_000.0
PRODUCTS = ("NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S")
GOAL_P99_MS = 10.0
GOAL_RATE = 500.0


@dataclass(frozen=True)
class Scenario:
    regions: int
    nodes: int
    jobs: int
    datasets: int = 200


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    build_seconds: float
    total_seconds: float
    placed: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.scenario.jobs / self.total_seconds


def make_world(
    scenario: Scenario, seed: int
) -> tuple[ClusterSnapshot, list[TrainingJobSpec], float]:
    """The snapshot, the backlog, and the seconds it took to build the snapshot."""
    rng = random.Random(seed)
    names = [f"r{index:02d}" for index in range(scenario.regions)]
    locations = {
        name: GeoPoint(rng.uniform(31.0, 45.0), rng.uniform(129.0, 145.0)) for name in names
    }
    regions = []
    for index, name in enumerate(names):
        links = tuple(
            DeclaredLink(
                other,
                round(1.0 + 1.5 * fibre_floor_ms(locations[name], locations[other]), 2),
                rng.choice((None, 10.0, 100.0, 400.0)),
                rng.choice(tuple(LinkKind)),
            )
            for other in names[index + 1 :]
        )
        regions.append(
            RegionSpec(
                name=name,
                prefecture=f"JP-{index % 47 + 1:02d}",
                display_name=name,
                gpu_hour_price=round(rng.uniform(1.0, 4.0), 2),
                carbon_intensity=round(rng.uniform(50, 700)),
                cordoned=rng.random() < 0.05,
                links=links,
                location=locations[name],
            )
        )
    measurements = [
        Measurement(
            a,
            b,
            1.2 * fibre_floor_ms(locations[a], locations[b]) + 1.0,
            rng.uniform(0, 1.5),
            NOW - rng.uniform(0, 60),
        )
        for a in names
        for b in names
        if a != b and rng.random() < 0.5
    ]
    region_products = {name: rng.sample(PRODUCTS, rng.choice((1, 2))) for name in names}
    nodes: list[NodeInfo] = []
    pods: list[PodUsage] = []
    for index in range(scenario.nodes):
        region = rng.choice(names)
        product = rng.choice(region_products[region])
        gpus = 8 if rng.random() < 0.85 else 4
        node_name = f"{region}-n{index:05d}"
        nodes.append(NodeInfo(node_name, region, gpus, product, rng.random() > 0.02))
        held = rng.choice((0, 0, 0, 1, 2, 4, gpus))
        if held:
            pods.append(PodUsage("busy", f"p{index}", node_name, held, False))
    datasets = []
    for index in range(scenario.datasets):
        home = rng.choice(names)
        mode = rng.choice(tuple(ResidencyMode))
        others = [name for name in names if name != home]
        residency = Residency(mode)
        if mode is ResidencyMode.RemoteAccess and rng.random() < 0.3:
            residency = Residency(
                mode, allowed_regions=frozenset(rng.sample(others, min(5, len(others))))
            )
        elif mode is ResidencyMode.Replicated:
            residency = Residency(
                mode, replica_regions=frozenset(rng.sample(others, min(2, len(others))))
            )
        datasets.append(DatasetSpec("ml", f"d{index}", home, residency))
    jobs = [
        TrainingJobSpec(
            namespace="ml",
            name=f"job-{index:05d}",
            dataset_ref=None if rng.random() < 0.1 else f"d{rng.randrange(scenario.datasets)}",
            replicas=rng.choice((1, 1, 2, 2, 4, 8)),
            gpus_per_replica=rng.choice((1, 2, 4, 8, 8)),
            gpu_product=rng.choice((None, None, *PRODUCTS)),
            placement=PlacementPolicy(
                max_rtt_ms=rng.choice((None, 10.0, 20.0, 30.0)),
                max_throughput_loss=rng.choice((None, None, 0.1, 0.2)),
                preferred_regions=tuple(rng.sample(names, rng.choice((0, 0, 1)))),
                excluded_regions=tuple(rng.sample(names, rng.choice((0, 0, 2)))),
                objective=rng.choice(tuple(Objective)),
            ),
            created_at=NOW - scenario.jobs + index,
        )
        for index in range(scenario.jobs)
    ]
    started = time.perf_counter()
    matrix = LatencyMatrix.build(regions, measurements)
    snapshot = ClusterSnapshot.build(regions, nodes, pods, datasets, matrix, NOW)
    return snapshot, jobs, time.perf_counter() - started


def run(scenario: Scenario, seed: int, settings: EngineSettings) -> Result:
    snapshot, jobs, build_seconds = make_world(scenario, seed)
    timings: list[float] = []
    placed = 0
    clock = time.perf_counter
    started = clock()
    for job in jobs:
        before = clock()
        decision = decide(job, snapshot, settings)
        if decision.placed:
            snapshot = with_decision(snapshot, decision, job)
            placed += 1
        timings.append(clock() - before)
    total = clock() - started
    timings.sort()
    return Result(
        scenario=scenario,
        build_seconds=build_seconds,
        total_seconds=total,
        placed=placed,
        p50_ms=statistics.median(timings) * 1000,
        p99_ms=timings[min(len(timings) - 1, int(len(timings) * 0.99))] * 1000,
        max_ms=timings[-1] * 1000,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| regions | nodes | jobs | placed | snapshot build | decisions/s "
        "| p50 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r.scenario
        lines.append(
            f"| {s.regions} | {s.nodes:,} | {s.jobs:,} | {r.placed:,} | "
            f"{r.build_seconds * 1000:,.0f} ms | {r.rate:,.0f} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.max_ms:.2f} |"
        )
    return "\n".join(lines)


def profile(scenario: Scenario, seed: int, settings: EngineSettings) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run(scenario, seed, settings)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run with a smaller backlog")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the main scenario")
    args = parser.parse_args(argv)
    settings = EngineSettings()
    main_jobs, scale_jobs = (1_000, 500) if args.quick else (10_000, 2_000)
    region_steps = (5, 47) if args.quick else (5, 10, 20, 47)
    node_steps = (500, 5_000) if args.quick else (500, 2_000, 5_000, 20_000)

    print(f"Python {platform.python_version()} on {platform.machine()}, seed {args.seed}")
    print()
    print(f"## Main: 47 regions × 5,000 nodes, backlog of {main_jobs:,} jobs")
    print()
    main_result = run(Scenario(47, 5_000, main_jobs), args.seed, settings)
    print(table([main_result]))
    met = main_result.p99_ms <= GOAL_P99_MS and main_result.rate >= GOAL_RATE
    print()
    print(
        f"Goal p99 ≤ {GOAL_P99_MS:g} ms and ≥ {GOAL_RATE:g} decisions/s: "
        f"{'met' if met else 'MISSED'}"
    )
    print()
    print(f"## Scaling with regions (5,000 nodes, {scale_jobs:,} jobs)")
    print()
    print(table([run(Scenario(n, 5_000, scale_jobs), args.seed, settings) for n in region_steps]))
    print()
    print(f"## Scaling with nodes (47 regions, {scale_jobs:,} jobs)")
    print()
    print(table([run(Scenario(47, n, scale_jobs), args.seed, settings) for n in node_steps]))
    if args.profile:
        print()
        print("## cProfile of the main scenario (top 15 by own time)")
        print()
        print("```")
        print(profile(Scenario(47, 5_000, main_jobs), args.seed, settings).strip())
        print("```")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
