#!/usr/bin/env python3
"""Pod groups of other controllers, side by side in one run on the kwok cluster: the same burst
of harness-created groups (a scheduler-plugins PodGroup with minMember = the group size, and its
pods carrying the `scheduling.x-k8s.io/pod-group` label) through kube-scheduler (no gang),
through scheduler-plugins' Coscheduling and through tsunagu; tsunagu's own TrainingJobs (the
code path of bench_operator.py); and the physical limit of the API server (bench_limit.py).
Prints JSON and a markdown table (figures go to docs/benchmarks.md).

  hack/bench_podgroups.py [--groups 500] [--per-group 8] [--tsunagu-timeout 60]

Needs `hack/cluster.sh up` with enough nodes (NODES_PER_REGION=200 → 1,000 nodes), tsunagu's
CRDs, and hack/tools.sh coscheduling (bench.sh does all three).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

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
    kubeconfig,
    parallel,
    percentile,
    start_operator,
)

PG_GROUP, PG_VERSION, PG_PLURAL = "scheduling.x-k8s.io", "v1alpha1", "podgroups"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
COSCHEDULING = "coscheduling"  # the scheduler name of Coscheduling's profile


def tools(*args: str) -> str:
    return subprocess.run([str(REPO / "hack" / "tools.sh"), *args], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def kubectl(*args: str, input: str | None = None) -> str:
    return subprocess.run(
        [tools("path", "kubectl"), "--kubeconfig", kubeconfig(), *args],
        input=input,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def ensure_podgroup_crd() -> str:
    """The PodGroup CRD: tsunagu's own when crds/ brought it, else scheduler-plugins' (read from
    its module at run time)."""
    present = kubectl("get", "crd", f"{PG_PLURAL}.{PG_GROUP}", "--ignore-not-found", "-o", "name")
    if present.strip():
        return "already installed"
    crd = Path(tools("module", "scheduler-plugins")) / "manifests" / "coscheduling" / "crd.yaml"
    kubectl("apply", "--server-side", "-f", str(crd))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PG_PLURAL}.{PG_GROUP}")
    return f"scheduler-plugins {crd.parent.parent.parent.name.split('@')[-1]}"


class Coscheduling:
    """kube-scheduler with Coscheduling (hack/tools.sh coscheduling) as a local process, one
    profile named `coscheduling` beside the cluster's default scheduler. Client rate limits as
    high as kwokctl gives the cluster's own kube-scheduler."""

    def __init__(self, permit_wait_seconds: int = 10) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bench-coscheduling-"))
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"leaderElect": False},
            "clientConnection": {"kubeconfig": kubeconfig(), "qps": 5000, "burst": 10000},
            "profiles": [{
                "schedulerName": COSCHEDULING,
                "plugins": {"multiPoint": {"enabled": [{"name": "Coscheduling"}]},
                            "queueSort": {"enabled": [{"name": "Coscheduling"}],
                                          "disabled": [{"name": "*"}]}},
                "pluginConfig": [{"name": "Coscheduling",
                                  "args": {"permitWaitingTimeSeconds": permit_wait_seconds}}],
            }],
        }  # fmt: skip
        (self.folder / "config.yaml").write_text(yaml.safe_dump(config))
        self.log = (self.folder / "scheduler.log").open("wb")
        self.process = subprocess.Popen(
            [tools("path", "coscheduling-scheduler"), "--config", str(self.folder / "config.yaml"),
             "--secure-port", "0", "--v", "1"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, core: Any, timeout: float = 120) -> None:
        """Ready when it binds a probe pod (its informers, the PodGroups' among them, synced)."""
        namespace = f"bench-cosched-probe-{uuid.uuid4().hex[:6]}"
        create_namespace(core, namespace)
        core.create_namespaced_pod(
            namespace, pod("probe", COSCHEDULING, None), _preload_content=False
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"Coscheduling's scheduler exited; log: {self.log.name}")
            if core.read_namespaced_pod("probe", namespace).spec.node_name:
                clear_namespace(core, namespace)
                return
            time.sleep(0.5)
        raise SystemExit(f"Coscheduling's scheduler bound no probe pod; log: {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def pod(name: str, scheduler: str, group: str | None) -> dict[str, Any]:
    labels = {POD_GROUP_LABEL: group} if group else {}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"schedulerName": scheduler, "containers": [
            {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    }  # fmt: skip


def pod_groups(
    core: Any,
    custom: Any,
    scheduler: str,
    groups: int,
    per_group: int,
    meter: CpuMeter,
    first_timeout: float | None = None,
) -> dict[str, Any] | None:
    """The harness's burst: per group a PodGroup (minMember = per_group) and its pods, 16 groups
    being created at a time. Timed from the first request to the last pod bound; per group from
    its first pod created until all its pods are bound. With `first_timeout`, gives up (returns
    None) when no group is fully bound by then."""
    namespace = f"bench-pg-{scheduler}-{uuid.uuid4().hex[:6]}"
    create_namespace(core, namespace)
    watcher = BindWatcher(core, namespace)
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

    before = meter()
    started = time.time()
    parallel(create, list(range(groups)))
    total = groups * per_group
    names = {
        g: [f"{g}-{r}" for r in range(per_group)] for g in (f"group-{i:04d}" for i in range(groups))
    }
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
            "harness_seconds": max(created.values()) - started, "cpu_seconds": spent}  # fmt: skip


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
    parser.add_argument("--limit-clients", default="go-http1,python")
    parser.add_argument("--limit-threads", type=int, default=16)
    args = parser.parse_args()
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

    keep(
        results, "kube_scheduler", pod_groups(core, custom, "default-scheduler", groups, per, meter)
    )
    peer = Coscheduling()
    meter.add("scheduler (Coscheduling)", peer.process.pid)
    try:
        peer.wait_ready(core)
        keep(results, "coscheduling", pod_groups(core, custom, COSCHEDULING, groups, per, meter))
    finally:
        peer.stop()
    keep(results, "tsunagu_trainingjobs", trainingjobs(core, custom, groups, per, meter))
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
    limits = {}
    for client in args.limit_clients.split(","):
        for mode in ("bound", "bind"):
            run = measure(core, nodes, groups * per, mode, args.limit_threads, client, meter)
            limits[f"{mode}/{client}"] = run
            keep(results, f"limit {mode}/{client}", run)
    results["limit"] = limits
    results["load_after"], results["wall_seconds"] = os.getloadavg(), time.time() - began
    print(json.dumps(results, indent=2))
    report(results, groups, per, args.tsunagu_timeout)


def report(results: dict[str, Any], groups: int, per: int, timeout: float) -> None:
    limits = results["limit"]
    bound = max(r["pods_per_second"] for k, r in limits.items() if k.startswith("bound/"))
    bind = max(r["pods_per_second"] for k, r in limits.items() if k.startswith("bind/"))
    cosched = results["coscheduling"]["pods_per_second"]
    print(
        f"\n| {results['nodes']} nodes, {groups} groups × {per} pods × 1 GPU | pods bound/s "
        "(× Coscheduling) | group p50 | group p99 | CPU-s of the burst, all processes |"
    )
    print("|---|---:|---:|---:|---:|")
    print(row("kube-scheduler (harness groups, no gang)", results["kube_scheduler"], cosched))
    print(row("Coscheduling (harness groups)", results["coscheduling"], None))
    print(row("tsunagu (harness groups)", results["tsunagu_podgroups"], cosched))
    print(row("tsunagu (own TrainingJobs)", results["tsunagu_trainingjobs"], cosched))
    if results["tsunagu_podgroups"] is None:
        print(
            f"\npod groups through tsunagu: skipped — no group of {per} pods with "
            f"schedulerName tsunagu was bound within {timeout:.0f} s (the operator does not "
            "schedule pod groups yet)"
        )
    print("\nPhysical limit (no scheduler; pods/s from the first write to the last pod bound):")
    for key, run in limits.items():
        print(f"- {key} ({run['threads']} in flight): {run['pods_per_second']:.0f} pods/s")
    ours = results["tsunagu_trainingjobs"]["pods_per_second"]
    print(
        f"\ntsunagu's TrainingJobs: {ours / bound:.2f}× the created-bound limit ({bound:.0f}/s), "
        f"{ours / bind:.2f}× the create-then-bind limit ({bind:.0f}/s)"
    )
    print(
        f"\nrun took {results['wall_seconds']:.0f} s; load average before "
        f"{results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f}"
    )


if __name__ == "__main__":
    main()
