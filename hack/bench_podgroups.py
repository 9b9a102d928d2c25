#!/usr/bin/env python3
"""Pod groups of other controllers, side by side in one run on the kwok cluster: the same burst
of harness-created groups (a scheduler-plugins PodGroup with minMember = the group size, and its
pods carrying the `scheduling.x-k8s.io/pod-group` label) through kube-scheduler (no gang),
through scheduler-plugins' Coscheduling and through tsunagu; tsunagu's own TrainingJobs (the
code path of bench_operator.py); and the physical limit of the API server (bench_limit.py).
Prints JSON and a markdown table (figures go to docs/benchmarks.md).

  hack/bench_podgroups.py [--groups 500] [--per-group 8] [--tsunagu-timeout 60]
                          [--phases harness,trainingjobs,tsunagu-groups,limit[,precreated]]

`precreated` (not run by default) takes the harness out: the same groups are created first and
kube-scheduler (the cluster's binary, a profile of its own), Coscheduling or tsunagu is started
after.

Needs `hack/cluster.sh up` with enough nodes (NODES_PER_REGION=200 → 1,000 nodes), tsunagu's
CRDs, and hack/tools.sh coscheduling (bench.sh does all three).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from bench_limit import CpuMeter, clear_namespace, measure  # noqa: E402
from bench_operator import (  # noqa: E402
    GROUP,
    VERSION,
    BindWatcher,
    api,
    bench_tsunagu,
    create_namespace,
    parallel,
    percentile,
    start_operator,
)
from bench_schedulers import (  # noqa: E402
    COSCHEDULING,
    PG_GROUP,
    PG_PLURAL,
    PG_VERSION,
    PLAIN,
    LocalScheduler,
    coscheduling,
    ensure_podgroup_crd,
    plain_kube_scheduler,
    pod,
)


def create_groups(
    core: Any, custom: Any, namespace: str, scheduler: str, groups: int, per_group: int
) -> dict[str, float]:
    """The harness's burst: per group a PodGroup (minMember = per_group) and its pods, 16 groups
    being created at a time. Returns when each group's first pod was created."""
    created: dict[str, float] = {}

    def create(index: int) -> None:
        name = f"group-{index:04d}"
        body = {"apiVersion": f"{PG_GROUP}/{PG_VERSION}", "kind": "PodGroup",
                "metadata": {"name": name},
                "spec": {"minMember": per_group, "scheduleTimeoutSeconds": 60}}  # fmt: skip
        response = custom.create_namespaced_custom_object(
            PG_GROUP, PG_VERSION, namespace, PG_PLURAL, body, _preload_content=False
        )
        response.read()
        response.release_conn()
        created[name] = time.time()
        for rank in range(per_group):
            response = core.create_namespaced_pod(
                namespace, pod(f"{name}-{rank}", scheduler, name), _preload_content=False
            )
            response.read()
            response.release_conn()

    parallel(create, list(range(groups)))
    return created


def group_pods(groups: int, per_group: int) -> dict[str, list[str]]:
    return {
        f"group-{i:04d}": [f"group-{i:04d}-{r}" for r in range(per_group)] for i in range(groups)
    }


def pod_groups(
    core: Any,
    custom: Any,
    scheduler: str,
    groups: int,
    per_group: int,
    meter: CpuMeter,
    first_timeout: float | None = None,
) -> dict[str, Any] | None:
    """The harness's burst while the scheduler runs. Timed from the first request to the last
    pod bound; per group from its first pod created until all its pods are bound. With
    `first_timeout`, gives up (returns None) when no group is fully bound by then."""
    namespace = f"bench-pg-{scheduler}-{uuid.uuid4().hex[:6]}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
    before = meter()
    started = time.time()
    created = create_groups(core, custom, namespace, scheduler, groups, per_group)
    harness = time.time() - started
    total, names = groups * per_group, group_pods(groups, per_group)
    if first_timeout is not None:
        deadline = started + first_timeout
        while time.time() < deadline:
            if any(all(p in watcher.bound for p in pods) for pods in names.values()):
                break
            time.sleep(0.5)
        else:
            watcher.stop()
            clear_namespace(core, namespace)
            return None
    watcher.wait_for(total, timeout=900)
    spent = {k: round(v - before.get(k, 0.0), 1) for k, v in meter().items()}
    elapsed = max(watcher.bound.values()) - started
    latencies = [max(watcher.bound[p] for p in pods) - created[g] for g, pods in names.items()]
    watcher.stop()
    clear_namespace(core, namespace)
    return {"pods": total, "seconds": elapsed, "pods_per_second": total / elapsed,
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "harness_seconds": harness, "cpu_seconds": spent}  # fmt: skip


def precreated(
    core: Any,
    custom: Any,
    start: Callable[[], LocalScheduler | OperatorAsScheduler],
    name: str,
    groups: int,
    per_group: int,
    meter: CpuMeter,
) -> dict[str, Any]:
    """The same groups created first, naming `name`, and its scheduler (`start()`) started
    afterwards: timed from its start, start-up included, to the last pod bound; a group's time
    is from that start until all its pods are bound. The harness is out of the figure."""
    namespace = f"bench-pre-{uuid.uuid4().hex[:6]}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
    create_groups(core, custom, namespace, name, groups, per_group)
    total, names = groups * per_group, group_pods(groups, per_group)
    time.sleep(5)  # the creates' own watch events and kwok settle before the clock starts
    before = meter()
    started = time.time()
    scheduler = start()
    meter.add(f"scheduler ({name})", scheduler.process.pid)
    try:
        watcher.wait_for(total, timeout=900)
        spent = {k: round(v - before.get(k, 0.0), 1) for k, v in meter().items()}
    finally:
        scheduler.stop()
    elapsed = max(watcher.bound.values()) - started
    latencies = [max(watcher.bound[p] for p in pods) - started for pods in names.values()]
    watcher.stop()
    clear_namespace(core, namespace)
    return {"pods": total, "seconds": elapsed, "pods_per_second": total / elapsed,
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "cpu_seconds": spent}  # fmt: skip


class OperatorAsScheduler:
    """`tsunagu run` (bench_operator's start_operator) with a LocalScheduler's face, for
    `precreated`: started once the groups exist; its start-up is inside the measured time."""

    def __init__(self) -> None:
        self.process, _, self.log = start_operator()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def trainingjobs(core: Any, custom: Any, groups: int, per_group: int, meter: CpuMeter) -> Any:
    """bench_operator.py's burst of TrainingJobs (no steady arrivals), with the CPU of the burst."""
    marks: dict[str, dict[str, float]] = {}

    def hook(moment: str, process: subprocess.Popen[bytes]) -> None:
        meter.add("scheduler (tsunagu)", process.pid)
        marks[moment] = meter()

    result = bench_tsunagu(core, custom, groups, per_group, steady=False, hook=hook)
    result["cpu_seconds"] = {
        k: round(v - marks["started"].get(k, 0.0), 1) for k, v in marks["bound"].items()
    }
    return result


def keep(results: dict[str, Any], phase: str, result: Any) -> None:
    """Records a phase and shows it at once: a later failure does not lose it."""
    results[phase] = result
    when = time.strftime("%H:%M:%S")
    print(f"[bench_podgroups {when}] {phase}: {json.dumps(result)}", file=sys.stderr, flush=True)


def row(name: str, result: dict[str, Any] | None, base: float | None) -> str:
    if result is None:
        return f"| {name} | skipped | | | |"
    ratio = f" ({result['pods_per_second'] / base:.2f}×)" if base else ""
    return (f"| {name} | {result['pods_per_second']:.0f}{ratio} | {result['p50']:.1f} s | "
            f"{result['p99']:.1f} s | {sum(result['cpu_seconds'].values()):.0f} |")  # fmt: skip


PHASES = ("harness", "trainingjobs", "tsunagu-groups", "precreated", "limit")
DEFAULT_PHASES = "harness,trainingjobs,tsunagu-groups,limit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument(
        "--tsunagu-timeout",
        type=float,
        default=60,
        help="seconds for tsunagu to bind a first harness-created group",
    )
    parser.add_argument("--limit-clients", default="go-http1", help="go-http1, python, go (HTTP/2)")
    parser.add_argument("--limit-threads", type=int, default=16)
    parser.add_argument("--phases", default=DEFAULT_PHASES,
                        help=f"any of {', '.join(PHASES)} (precreated: the groups created first, "
                        "kube-scheduler or Coscheduling started after)")  # fmt: skip
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if phases - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(phases - set(PHASES)))}")
    began, load = time.time(), os.getloadavg()
    core, custom = api()
    from tests.support.scenario import japan_regions

    for item in japan_regions():
        try:
            custom.create_cluster_custom_object(GROUP, VERSION, "regions", item)
        except Exception as error:  # 409: already there from an earlier phase or run
            if getattr(error, "status", None) != 409:
                raise
    crd = ensure_podgroup_crd()
    nodes = sorted(n.metadata.name for n in core.list_node(label_selector="type=kwok").items)
    meter = CpuMeter()
    groups, per = args.groups, args.per_group
    results: dict[str, Any] = {"nodes": len(nodes), "load_before": load, "podgroup_crd": crd}

    if "harness" in phases:
        kube = pod_groups(core, custom, "default-scheduler", groups, per, meter)
        keep(results, "kube_scheduler", kube)
        peer = coscheduling()
        meter.add("scheduler (Coscheduling)", peer.process.pid)
        try:
            peer.wait_ready(core)
            cosched = pod_groups(core, custom, COSCHEDULING, groups, per, meter)
            keep(results, "coscheduling", cosched)
        finally:
            peer.stop()
    if "trainingjobs" in phases:
        keep(results, "tsunagu_trainingjobs", trainingjobs(core, custom, groups, per, meter))
    if "tsunagu-groups" in phases:
        operator, _, operator_log = start_operator()
        results["tsunagu_podgroups_log"] = operator_log.name
        meter.add("scheduler (tsunagu)", operator.pid)
        try:
            through = pod_groups(
                core, custom, "tsunagu", groups, per, meter, first_timeout=args.tsunagu_timeout
            )
            keep(results, "tsunagu_podgroups", through)
        finally:
            operator.terminate()
            operator.wait(timeout=60)
    if "precreated" in phases:
        peers = (("precreated_kube_scheduler", plain_kube_scheduler, PLAIN),
                 ("precreated_coscheduling", coscheduling, COSCHEDULING),
                 ("precreated_tsunagu", OperatorAsScheduler, "tsunagu"))  # fmt: skip
        for phase, start, name in peers:
            keep(results, phase, precreated(core, custom, start, name, groups, per, meter))
    if "limit" in phases:
        results["limit"] = {}
        for client in args.limit_clients.split(","):
            for mode in ("bound", "bind"):
                run = measure(core, nodes, groups * per, mode, args.limit_threads, client, meter)
                results["limit"][f"{mode}/{client}"] = run
                keep(results, f"limit {mode}/{client}", run)
    results["load_after"], results["wall_seconds"] = os.getloadavg(), time.time() - began
    print(json.dumps(results, indent=2))
    report(results, groups, per, args.tsunagu_timeout)


def report(results: dict[str, Any], groups: int, per: int, timeout: float) -> None:
    base = (results.get("coscheduling") or {}).get("pods_per_second")
    first = (results.get("precreated_coscheduling") or {}).get("pods_per_second")
    print(
        f"\n| {results['nodes']} nodes, {groups} groups × {per} pods × 1 GPU | pods bound/s "
        "(× Coscheduling) | group p50 | group p99 | CPU-s of the burst, all processes |"
    )
    print("|---|---:|---:|---:|---:|")
    rows = (("kube_scheduler", "kube-scheduler (harness groups, no gang)", base),
            ("coscheduling", "Coscheduling (harness groups)", None),
            ("tsunagu_podgroups", "tsunagu (harness groups)", base),
            ("tsunagu_trainingjobs", "tsunagu (own TrainingJobs)", base),
            ("precreated_kube_scheduler", "kube-scheduler, groups created first", first),
            ("precreated_coscheduling", "Coscheduling, groups created first", None),
            ("precreated_tsunagu", "tsunagu, groups created first", first))  # fmt: skip
    for key, name, against in rows:
        if key in results:
            print(row(name, results[key], against))
    if "tsunagu_podgroups" in results and results["tsunagu_podgroups"] is None:
        print(f"\npod groups through tsunagu: skipped — no group of {per} pods with "
              f"schedulerName tsunagu was bound within {timeout:.0f} s (the operator does not "
              "schedule pod groups yet)")  # fmt: skip
    limits = results.get("limit")
    if limits:
        print("\nPhysical limit (no scheduler; pods/s from the first write to the last pod bound):")
        for key, run in limits.items():
            print(f"- {key} ({run['threads']} in flight): {run['pods_per_second']:.0f} pods/s")
        bound = max(r["pods_per_second"] for k, r in limits.items() if k.startswith("bound/"))
        bind = max(r["pods_per_second"] for k, r in limits.items() if k.startswith("bind/"))
        if "tsunagu_trainingjobs" in results:
            ours = results["tsunagu_trainingjobs"]["pods_per_second"]
            print(
                f"\ntsunagu's TrainingJobs: {ours / bound:.2f}× the created-bound limit "
                f"({bound:.0f}/s), {ours / bind:.2f}× the create-then-bind limit ({bind:.0f}/s)"
            )
    print(f"\nrun took {results['wall_seconds']:.0f} s; load average before "
          f"{results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
