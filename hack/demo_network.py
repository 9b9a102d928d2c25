#!/usr/bin/env python3
"""The Python half of `make demo` (hack/demo.sh runs it).

  demo_network.py serve STATE_DIR [--topology FILE] [--dataset-listen HOST]
                                                      the latency network, until SIGTERM
  demo_network.py summary [--kubeconfig FILE] [--member NAME=KUBECONFIG]...
                                                      the story, read from the objects' status

`serve` runs one `tsunagu probe` per region of the topology on loopback, each measuring every
other region through a delay proxy of its own, so the probes see the topology's distances (Tokyo↔
Osaka ≈ 6 ms, Tokyo↔Fukuoka ≈ 15 ms, …). It writes STATE_DIR/prometheus.yml (scrape config for
the probes), STATE_DIR/probes.pids and, once every probe answers, STATE_DIR/ready.

With `--dataset-listen HOST` (the demo on real nodes) it also serves a sample of the Tokyo data:
records over HTTP on loopback, reached by pods through a delay proxy on HOST with the
topology's Tokyo↔Fukuoka RTT (the storage is in Tokyo, the real nodes in Fukuoka); its URL goes
to STATE_DIR/dataset-url.

`summary` reads the hub (--kubeconfig): Regions, Cluster objects, Datasets and TrainingJobs; with
`--member NAME=KUBECONFIG` it also lists the gangs the hub made in that member cluster, read from
the member's own API server, so which job went to which cluster is seen on both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.latency_harness import LatencyMesh, prometheus_config  # noqa: E402
from tests.support.realnodes import dataset_server  # noqa: E402

DEFAULT_TOPOLOGY = REPO_ROOT / "hack" / "topology" / "japan.yaml"
SCRAPE_INTERVAL_SECONDS = 1.0
PROBE_INTERVAL_SECONDS = 0.5
EXAMPLE_NAMESPACE = "team-a"  # where examples/40-trainingjobs.yaml puts the jobs
DATA_REGION = "tokyo"  # where the examples' data lives
REAL_NODE_REGION = "fukuoka"  # where hack/demo.sh puts the real nodes


def declared_rtts(topology: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """Declared links both ways; where both sides declare one, the larger RTT counts (DESIGN §4)."""
    rtts: dict[tuple[str, str], float] = {}
    for region in topology["regions"]:
        for link in region.get("links") or []:
            for pair in ((region["name"], link["to"]), (link["to"], region["name"])):
                rtts[pair] = max(rtts.get(pair, 0.0), float(link["rttMs"]))
    return rtts


def all_pair_rtts(topology: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """Every pair gets an RTT: its declared link, else the shortest path over declared links
    (traffic between two sites without a direct link is routed through the others)."""
    names = [region["name"] for region in topology["regions"]]
    declared = declared_rtts(topology)
    result: dict[tuple[str, str], float] = {}
    for source in names:
        distance = {source: 0.0}
        queue = [(0.0, source)]
        while queue:
            here_ms, here = heapq.heappop(queue)
            if here_ms > distance.get(here, float("inf")):
                continue
            for (a, b), rtt in declared.items():
                if a == here and here_ms + rtt < distance.get(b, float("inf")):
                    distance[b] = here_ms + rtt
                    heapq.heappush(queue, (distance[b], b))
        for target in names:
            if target == source:
                continue
            if target not in distance:
                sys.exit(f"topology: region {target} is not linked to {source} by any path")
            result[(source, target)] = declared.get((source, target), distance[target])
    return result


def serve(state_dir: Path, topology_path: Path, dataset_listen: str | None = None) -> int:
    topology = yaml.safe_load(topology_path.read_text(encoding="utf-8"))
    names = [region["name"] for region in topology["regions"]]
    rtts = all_pair_rtts(topology)
    # One proxy per ordered pair takes the whole pair's RTT: half of it in each direction.
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "ready").unlink(missing_ok=True)
    (state_dir / "dataset-url").unlink(missing_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mesh = LatencyMesh(names, state_dir / "probes", rtts, probe_interval=PROBE_INTERVAL_SECONDS)
    with contextlib.ExitStack() as stack:
        if dataset_listen:
            storage = stack.enter_context(
                dataset_server(dataset_listen, rtts[(DATA_REGION, REAL_NODE_REGION)])
            )
            (state_dir / "dataset-url").write_text(storage.url, encoding="utf-8")
        stack.enter_context(mesh)
        (state_dir / "probes.pids").write_text(
            "".join(f"{probe.process.pid}\n" for probe in mesh.probes.values()), encoding="utf-8"
        )
        (state_dir / "prometheus.yml").write_text(
            prometheus_config(mesh.metrics_targets, SCRAPE_INTERVAL_SECONDS), encoding="utf-8"
        )
        table = {f"{a}->{b}": rtt for (a, b), rtt in sorted(rtts.items())}
        (state_dir / "ready").write_text(json.dumps(table, indent=1), encoding="utf-8")
        print(f"latency network up: {len(names)} probes, {len(rtts)} delayed paths", flush=True)
        while not stop.wait(1.0):
            dead = [region for region, probe in mesh.probes.items() if probe.process.poll()]
            if dead:
                print(f"probes exited: {dead}\n{mesh.logs()}", file=sys.stderr, flush=True)
                return 1
    (state_dir / "ready").unlink(missing_ok=True)
    return 0


# --- the summary ------------------------------------------------------------------------------


def kubectl_json(kubeconfig: str | None, *args: str) -> Any:
    kubectl = os.environ.get("KUBECTL", "kubectl")  # demo.sh passes the one hack/tools.sh built
    command = [kubectl, *(["--kubeconfig", kubeconfig] if kubeconfig else []), "get", *args]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output)


def condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def _as_topology(region: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": region["metadata"]["name"], "links": region["spec"].get("links") or []}


def _ms(value: object) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


def _loss(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "-"


def _why_not(alternative: Mapping[str, Any]) -> str:
    reason = alternative.get("reason") or alternative.get("verdict") or "?"
    if alternative.get("verdict") == "Feasible":
        reason = "feasible, scored lower"
    rtt = alternative.get("rttMs")
    at = f" at {_ms(rtt)}" if isinstance(rtt, int | float) and reason != "DataResidency" else ""
    return f"{alternative['region']} {reason}{at}"


def _running(job: Mapping[str, Any]) -> str:
    """Replicas running now, or how the job ended."""
    status = job.get("status") or {}
    finished = condition(job, "Finished")
    if finished.get("status") == "True":
        return str(finished.get("reason"))
    return f"{status.get('runningReplicas', 0)}/{job['spec']['replicas']}"


def render_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _cluster_of(region: Mapping[str, Any]) -> str | None:
    return ((region.get("spec") or {}).get("clusterRef") or {}).get("name")


def _print_clusters(regions: Sequence[Mapping[str, Any]], members: Sequence[Any]) -> None:
    by_cluster: dict[str | None, list[str]] = {}
    for region in regions:
        by_cluster.setdefault(_cluster_of(region), []).append(region["metadata"]["name"])
    print("\nThe clusters (kubectl get clusters.tsunagu.io; a Region's spec.clusterRef):")
    print(f"  hub            the operator's own cluster: {', '.join(by_cluster.get(None, []))}")
    for member in members:
        name = member["metadata"]["name"]
        reachable = condition(member, "Reachable")
        version = (member.get("status") or {}).get("serverVersion", "")
        state = f"Reachable={reachable.get('status', '?')} {reachable.get('reason', '')} {version}"
        print(f"  {name:<14} member, {state.strip()}: {', '.join(by_cluster.get(name, [])) or '-'}")


def _where(job: Mapping[str, Any]) -> str:
    status = job.get("status") or {}
    return str(status.get("cluster") or "hub") if status.get("region") else "-"


def _why(
    job: Mapping[str, Any],
    datasets: Mapping[str, Mapping[str, Any]],
    cluster_of: Mapping[str, str | None],
) -> str:
    """One line: the cluster and region a job went to and why, or why it waits."""
    name = job["metadata"]["name"]
    status = job.get("status") or {}
    placement = status.get("placement") or {}
    alternatives = placement.get("alternatives") or []
    dataset = datasets.get(((job["spec"].get("datasetRef") or {}).get("name")) or "")
    home = ((dataset or {}).get("spec") or {}).get("homeRegion")
    residency = ((dataset or {}).get("spec") or {}).get("residency") or {}
    home_verdict = next((alt for alt in alternatives if alt.get("region") == home), None)
    region = status.get("region")
    if not region:
        scheduled = condition(job, "Scheduled")
        why = f"{scheduled.get('reason')}: {scheduled.get('message', '')}"
        if residency.get("mode") == "Pinned":
            why = f"its data is Pinned to {home}; {why}"
        return f"  {name} waits in the hub: {why}"
    cluster = status.get("cluster")
    where = f"cluster {cluster} (region {region})" if cluster else f"the hub (region {region})"
    reasons = []
    if home and region != home:
        full = home_verdict.get("reason") if home_verdict else None
        if full:
            reasons.append(f"{home} (home of its data) {full}")
        if region in (residency.get("replicaRegions") or []):
            reasons.append(f"reads the {residency.get('mode')} copy of its data there")
        else:
            budget = job["spec"].get("placement", {}).get("maxRttMs")
            within = f" within its {budget} ms budget" if budget is not None else ""
            reasons.append(
                f"reads the data in {home} over {_ms(placement.get('rttMs'))}{within}, "
                f"predicted loss {_loss(placement.get('predictedThroughputLoss'))}"
            )
    elif not home:
        reasons.append("no dataset: anywhere goes")
    if cluster:
        reasons.append(f"its gang was made in {cluster} by the hub")
    others = ", ".join(
        _why_not(alt)
        + (f" [cluster {member}]" if (member := cluster_of.get(alt["region"])) else "")
        for alt in alternatives
        if alt.get("region") != home
    )
    if others:
        reasons.append(f"elsewhere: {others}")
    return f"  {name} → {where}: " + "; ".join(reasons)


def _print_member_pods(members: Sequence[tuple[str, str]]) -> None:
    for name, kubeconfig in members:
        pods = kubectl_json(kubeconfig, "pods", "-A", "-l", "tsunagu.io/hub-job", "-o", "json")
        rows = [("POD (IN THE MEMBER)", "NODE", "PHASE", "HUB JOB")]
        items = sorted(
            pods["items"], key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])
        )
        for pod in items:
            labels = pod["metadata"].get("labels") or {}
            rows.append(
                (
                    f"{pod['metadata']['namespace']}/{pod['metadata']['name']}",
                    (pod.get("spec") or {}).get("nodeName") or "-",
                    (pod.get("status") or {}).get("phase") or "-",
                    f"{labels.get('tsunagu.io/hub-namespace')}/{labels.get('tsunagu.io/hub-job')}",
                )
            )
        print(f"\nWhat the hub made in the member {name}, read from its own API server")
        print(f"(kubectl --kubeconfig {kubeconfig} get pods -A -l tsunagu.io/hub-job):")
        print(render_table(rows) if len(rows) > 1 else "  (nothing)")


def summary(kubeconfig: str | None, members: Sequence[tuple[str, str]] = ()) -> int:
    regions = kubectl_json(kubeconfig, "regions", "-o", "json")["items"]
    clusters = kubectl_json(kubeconfig, "clusters.tsunagu.io", "-o", "json")["items"]
    jobs = kubectl_json(kubeconfig, "trainingjobs", "-n", EXAMPLE_NAMESPACE, "-o", "json")["items"]
    datasets = {
        item["metadata"]["name"]: item
        for item in kubectl_json(kubeconfig, "datasets", "-n", EXAMPLE_NAMESPACE, "-o", "json")[
            "items"
        ]
    }
    cluster_of = {region["metadata"]["name"]: _cluster_of(region) for region in regions}
    declared = declared_rtts({"regions": [_as_topology(region) for region in regions]})
    _print_clusters(regions, clusters)
    print("\nLatency from Tokyo, where the data lives, as tsunagu sees it now (Region status):")
    for region in regions:
        if region["metadata"]["name"] != "tokyo":
            continue
        for link in (region.get("status") or {}).get("links") or []:
            member = cluster_of.get(link["to"])
            print(
                f"  tokyo → {link['to']:<10} {_ms(link.get('rttMs')):>9} {link['source']:<10}"
                f"  (declared {_ms(declared.get(('tokyo', link['to'])))})"
                + (f"  in cluster {member}" if member else "")
            )
    rows = [
        ("JOB", "CLUSTER", "REGION", "RTT (DECISION)", "PREDICTED LOSS", "SCHEDULED", "RUNNING")
    ]
    jobs.sort(key=lambda job: (-int(job["spec"].get("priority", 0)), job["metadata"]["name"]))
    for job in jobs:
        status = job.get("status") or {}
        placement = status.get("placement") or {}
        scheduled = condition(job, "Scheduled")
        rows.append(
            (
                f"{job['metadata']['namespace']}/{job['metadata']['name']}",
                _where(job),
                status.get("region") or "(pending)",
                _ms(placement.get("rttMs")) if status.get("region") else "-",
                _loss(placement.get("predictedThroughputLoss")) if status.get("region") else "-",
                scheduled.get("reason", "(no decision yet)"),
                _running(job),
            )
        )
    print(f"\nWhere the TrainingJobs went (kubectl get trainingjobs -n {EXAMPLE_NAMESPACE}):")
    print(render_table(rows))
    print("\nWhich cluster, and why (status.cluster, status.placement, the Scheduled condition):")
    for job in jobs:
        print(_why(job, datasets, cluster_of))
    _print_member_pods(members)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the latency network until SIGTERM")
    serve_parser.add_argument("state_dir", type=Path)
    serve_parser.add_argument("--topology", type=Path, default=DEFAULT_TOPOLOGY)
    serve_parser.add_argument("--dataset-listen", help="serve the Tokyo data sample on HOST")
    summary_parser = commands.add_parser("summary", help="print where the jobs went and why")
    summary_parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    summary_parser.add_argument(
        "--member", action="append", default=[], metavar="NAME=KUBECONFIG",
        help="a member cluster whose gangs to list, read with its own kubeconfig",
    )  # fmt: skip
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.state_dir, args.topology, args.dataset_listen)
    members = [tuple(item.split("=", 1)) for item in args.member]
    return summary(args.kubeconfig, [(name, path) for name, path in members])


if __name__ == "__main__":
    raise SystemExit(main())
