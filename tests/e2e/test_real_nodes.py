"""Real pods on real kubelet nodes (hack/realnodes.sh): a TrainingJob placed by the operator runs
a distributed program that rendezvouses through MASTER_ADDR and succeeds by itself, and the
kubelet's own admission refuses a pod that would over-commit the GPUs the gang holds."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import (
    HACK,
    REPO_ROOT,
    Cluster,
    OperatorProcess,
    release_datasets,
    wait_for_namespace_gone,
)
from tests.support.delay_proxy import DelayProxy
from tests.support.fault_proxy import FaultProxy, FaultRates, upstream_tls
from tests.support.helm import CHART, Helm
from tests.support.hoststate import host_leftovers, recorded_host_state
from tests.support.latency_harness import PrometheusServer, close_to
from tests.support.realnodes import (
    ALL_NODE_NAMES,
    GPUS_PER_REAL_NODE,
    NODE_REGIONS,
    OTHER_REGION,
    REAL_NODE_NAMES,
    REAL_REGION,
    DatasetServer,
    GpusInUse,
    bring_up_real_cluster,
    cannot_run_reason,
    dataset_server,
    host_ip,
    pod_log,
    real_cluster_env,
    real_regions,
)
from tests.support.scenario import (
    condition,
    events_for,
    free_port,
    job,
    job_pods,
    training_job,
    wait_condition,
    wait_ready,
)
from tests.support.waiting import wait_until
from tsunagu.sources.latency_settings import probe_quantile_query

pytestmark = pytest.mark.e2e

TRAINER_IMAGE = "tsunagu.local/trainer:dev"
CRDS = ("regions.tsunagu.io", "datasets.tsunagu.io", "trainingjobs.tsunagu.io")


@pytest.fixture(scope="module")
def real_cluster() -> Cluster:
    reason = cannot_run_reason()
    if reason:
        pytest.skip(reason)
    try:
        cluster = bring_up_real_cluster()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRDS)
    )
    cluster.apply(real_regions())
    return cluster


@pytest.fixture
def namespace(real_cluster: Cluster) -> Iterator[str]:
    name = f"r-{uuid.uuid4().hex[:10]}"
    real_cluster.kubectl("create", "namespace", name)
    yield name
    release_datasets(real_cluster, name)  # the operators of the test have stopped
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    wait_for_namespace_gone(real_cluster, name, timeout=180)


@contextmanager
def local_operator(
    cluster: Cluster, request: pytest.FixtureRequest, *args: str, kubeconfig: str | None = None
) -> Iterator[OperatorProcess]:
    """`tsunagu run` as a local process, ready; its log is printed when the test failed."""
    port = free_port()
    # A Lease of its own in `default` (outside a pod the operator's namespace does not exist).
    env = {
        "TSUNAGU_LEADER_ELECT_NAMESPACE": "default",
        "TSUNAGU_LEADER_ELECT_LEASE_NAME": f"tsunagu-test-{uuid.uuid4().hex[:10]}",
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    process = OperatorProcess(
        cluster,
        ["--liveness-port", str(port), "--metrics-port", "0", "--retry-interval", "2", *args],
        env,
    )
    try:
        wait_ready(process, port)
        yield process
    finally:
        process.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- operator log ---\n{process.output()[-8000:]}")


@pytest.fixture
def operator(real_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    with local_operator(real_cluster, request) as process:
        yield process


@pytest.fixture
def storage() -> Iterator[DatasetServer]:
    with dataset_server(host_ip()) as server:
        yield server


def http_dataset(namespace: str, name: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "homeRegion": REAL_REGION,
            "residency": {"mode": "Pinned"},
            "access": {"endpoint": endpoint},
            "sizeGiB": 1,
        },
    }


def real_job(
    namespace: str,
    name: str,
    dataset: str,
    command: list[str] | None = None,
    gpus: int = GPUS_PER_REAL_NODE,
) -> Any:
    """Two ranks of all the GPUs of one node each (by default): the gang needs both kanto nodes."""
    body = training_job(namespace, name, dataset, replicas=2, gpus=gpus)
    container: dict[str, Any] = {
        "name": "trainer",
        "image": TRAINER_IMAGE,
        "imagePullPolicy": "Never",
        "env": [{"name": "TRAINER_RECORDS", "value": "3"}],
    }
    if command:
        container["command"] = command
    # `sleep` as PID 1 ignores SIGTERM: without a short grace the namespace takes 30 s to go.
    spec = {"containers": [container], "terminationGracePeriodSeconds": 1}
    body["spec"]["template"] = {"spec": spec}
    return body


def test_two_ranks_on_two_real_nodes_rendezvous_and_succeed(
    real_cluster: Cluster, namespace: str, operator: OperatorProcess, storage: DatasetServer
) -> None:
    real_cluster.apply(http_dataset(namespace, "corpus", storage.url))
    real_cluster.apply(real_job(namespace, "allreduce", "corpus"))

    body = wait_condition(
        real_cluster, namespace, "allreduce", "Finished", "True", "Succeeded", timeout=120
    )
    assert body["status"]["region"] == REAL_REGION
    pods = {int(p["metadata"]["labels"]["tsunagu.io/rank"]): p for p in job_pods(
        real_cluster, namespace, "allreduce")}  # fmt: skip
    assert sorted(pods) == [0, 1]
    assert {p["spec"]["nodeName"] for p in pods.values()} == set(REAL_NODE_NAMES)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods.values())

    master = f"allreduce-0.allreduce.{namespace}.svc"
    logs = {rank: pod_log(real_cluster, namespace, f"allreduce-{rank}") for rank in pods}
    # Each rank adds rank+1 plus the 3 records it read: (1+3) + (2+3).
    for rank, text in logs.items():
        assert f"[rank {rank}] starting: world size 2, region {REAL_REGION}" in text, text
        assert f"[rank {rank}] read 3 records of dataset corpus (home {REAL_REGION}" in text, text
        assert f"[rank {rank}] all-reduce sum = 9 (expected 9) over 2 ranks" in text, text
        assert f"[rank {rank}] done" in text, text
    assert f"[rank 0] rendezvous at {master}:29500 complete: 2 ranks" in logs[0]
    assert f"[rank 1] connected to {master}:29500" in logs[1]
    assert sorted(request["rank"] for request in storage.requests) == ["0", "1"]


def test_kubelet_refuses_a_foreign_pod_on_gpus_the_gang_holds(
    real_cluster: Cluster, namespace: str, operator: OperatorProcess, storage: DatasetServer
) -> None:
    real_cluster.apply(http_dataset(namespace, "corpus", storage.url))
    real_cluster.apply(real_job(namespace, "holder", "corpus", command=["sleep", "300"]))
    wait_condition(real_cluster, namespace, "holder", "Running", "True", "PodsRunning")
    gang = {p["metadata"]["name"]: p["metadata"]["uid"] for p in job_pods(
        real_cluster, namespace, "holder")}  # fmt: skip
    node = REAL_NODE_NAMES[0]

    # Another scheduler's pod, bound straight onto a node whose GPUs the gang holds: only the
    # kubelet's admission stands between it and an over-committed GPU.
    real_cluster.apply(foreign_pod(namespace, "intruder", node, gpus=1))

    def rejected() -> dict[str, Any] | None:
        pod = real_cluster.get_json("pod", "intruder", "-n", namespace)
        return pod if pod["status"].get("phase") == "Failed" else None

    intruder = wait_until(rejected, timeout=60, message="the kubelet to reject the intruder")
    assert intruder["status"]["reason"] == "OutOfnvidia.com/gpu", intruder["status"]
    assert "nvidia.com/gpu" in intruder["status"]["message"]

    after = job_pods(real_cluster, namespace, "holder")
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in after} == gang
    assert all(p["status"]["phase"] == "Running" for p in after)
    body = wait_condition(real_cluster, namespace, "holder", "Running", "True", "PodsRunning")
    assert body["status"]["region"] == REAL_REGION


def foreign_pod(namespace: str, name: str, node: str, gpus: int) -> dict[str, Any]:
    """Another scheduler's pod, bound straight onto `node` by spec.nodeName."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedulerName": "another-scheduler",
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": TRAINER_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "300"],
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
            }],
        },
    }  # fmt: skip


# How late the operator hears of pods in the test below: longer than it takes to decide and bind.
POD_WATCH_LAG_SECONDS = 5.0


def test_a_gang_pod_the_kubelet_refuses_is_placed_again_without_over_commit(
    real_cluster: Cluster,
    namespace: str,
    storage: DatasetServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """The operator's view of pods trails the API server (its pod watch hears everything 5 s
    late, through the fault proxy): another scheduler's pod bound onto real-kanto-0 is not yet in
    that view when a gang of two 1-GPU ranks is placed, both on real-kanto-0 (best fit). The
    kubelet admits the foreign pod and one rank, and refuses the other `OutOfnvidia.com/gpu`.
    The operator rolls the gang back and places it again, now knowing the foreign pod: one rank
    per node; it rendezvouses and succeeds, with no restart counted, and no node ever runs more
    GPUs than it has."""
    api = real_cluster.api_client().configuration
    lagging = FaultRates(lag_watch=("/api/v1/pods",), lag_watch_seconds=POD_WATCH_LAG_SECONDS)
    node = REAL_NODE_NAMES[0]
    with (
        FaultProxy(api.host, upstream_tls(api), rates=lagging) as proxy,
        local_operator(
            real_cluster, request, kubeconfig=str(proxy.write_kubeconfig(tmp_path / "kubeconfig"))
        ),
        GpusInUse(real_cluster) as in_use,
    ):
        real_cluster.apply(http_dataset(namespace, "corpus", storage.url))
        real_cluster.apply(foreign_pod(namespace, "other", node, gpus=1))
        real_cluster.apply(real_job(namespace, "gang", "corpus", gpus=1))
        body = wait_condition(
            real_cluster, namespace, "gang", "Finished", "True", "Succeeded", timeout=150
        )

    requeued = [e["message"] for e in events_for(real_cluster, namespace, "gang")
                if e["reason"] == "Requeued"]  # fmt: skip
    assert any("the kubelet refused gang-" in m and "(OutOfnvidia.com/gpu)" in m
               for m in requeued), requeued  # fmt: skip
    assert not body["status"].get("restarts"), "a refusal at admission costs no restart"
    pods = job_pods(real_cluster, namespace, "gang")
    # Placed again around the foreign pod: real-kanto-0 had one GPU left.
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(REAL_NODE_NAMES)
    assert all(p["status"]["phase"] == "Succeeded" for p in pods)
    for rank in (0, 1):
        text = pod_log(real_cluster, namespace, f"gang-{rank}")
        assert f"[rank {rank}] all-reduce sum = 9 (expected 9) over 2 ranks" in text, text
    other = real_cluster.get_json("pod", "other", "-n", namespace)
    assert other["status"]["phase"] == "Running", "the foreign pod was never disturbed"
    assert in_use.samples > 0
    assert all(gpus <= GPUS_PER_REAL_NODE for gpus in in_use.most.values()), in_use.most
    assert in_use.most.get(node, 0) >= 1, "the sampler saw the foreign pod run"


# No USER is set anywhere: the image's UID 65532 has no passwd entry, which Kopf's identity
# (getpass.getuser) once tripped over.
def test_chart_runs_the_operator_as_a_real_pod_that_places_and_runs_a_job(
    real_cluster: Cluster,
    namespace: str,
    storage: DatasetServer,
    helm: Helm,
) -> None:
    """The operator image (hack/image.sh operator: the Dockerfile's contents) under the chart's
    ServiceAccount, restricted Pod Security and read-only root filesystem, on a real kubelet."""
    suffix = uuid.uuid4().hex[:6]
    system, release = f"tsunagu-system-{suffix}", f"tsunagu-{suffix}"
    real_cluster.apply({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": system, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }},
    })  # fmt: skip
    values = {
        "image": {"repository": "tsunagu.local/operator", "tag": "dev", "pullPolicy": "Never"},
        "operator": {"retryIntervalSeconds": 2},
    }
    install = helm.run(
        "install", release, str(CHART), "--namespace", system, "--kubeconfig",
        real_cluster.kubeconfig, "--wait", "--timeout", "120s", values=values, check=False,
    )  # fmt: skip
    try:
        assert install.returncode == 0, f"helm install failed: {install.stderr}"
        assert "violate" not in install.stderr, f"Pod Security warnings: {install.stderr}"
        # The chart's default: two replicas, one of which leads under the Lease.
        operator_pods = real_cluster.get_json("pods", "-n", system)["items"]
        assert len(operator_pods) == 2
        for operator_pod in operator_pods:
            assert operator_pod["spec"]["nodeName"] in ALL_NODE_NAMES
            container = operator_pod["spec"]["containers"][0]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True

        real_cluster.apply(http_dataset(namespace, "corpus", storage.url))
        real_cluster.apply(real_job(namespace, "inpod", "corpus"))

        def finished() -> bool:
            for pod in real_cluster.get_json("pods", "-n", system)["items"]:
                if pod["status"]["containerStatuses"][0]["restartCount"]:
                    previous = real_cluster.kubectl(
                        "logs", "--previous", pod["metadata"]["name"], "-n", system, check=False
                    )
                    pytest.fail(f"an operator pod crashed:\n{previous.stdout[-3000:]}")
            found = condition(job(real_cluster, namespace, "inpod"), "Finished")
            return bool(found and found["status"] == "True" and found["reason"] == "Succeeded")

        # No other operator runs against this cluster: the leader in a pod placed and followed it.
        wait_until(finished, timeout=120, message="inpod Finished=True Succeeded")
        lease = real_cluster.get_json("lease", release, "-n", system)  # the full name
        names = {p["metadata"]["name"] for p in operator_pods}
        assert lease["spec"]["holderIdentity"].split("_")[0] in names
        pods = job_pods(real_cluster, namespace, "inpod")
        assert {p["spec"]["nodeName"] for p in pods} == set(REAL_NODE_NAMES)
        assert all(p["status"]["phase"] == "Succeeded" for p in pods)
    finally:
        helm.run(
            "uninstall", release, "--namespace", system, "--kubeconfig",
            real_cluster.kubeconfig, "--wait", check=False,
        )  # fmt: skip
        real_cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)
        wait_for_namespace_gone(real_cluster, system, timeout=180)


# The RTT added between kanto and kyushu: the distance the probe pods measure.
INTER_REGION_RTT_MS = 12.0


def probe_scrape_config(targets_file: Path) -> str:
    """Prometheus scrapes the probe pods listed in `targets_file` (file_sd: Debian builds its
    Prometheus without Kubernetes discovery, so `write_probe_targets` does the discovering)."""
    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "tsunagu-probes",
            "scrape_timeout": "1s",
            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        }],
    })  # fmt: skip


def write_probe_targets(cluster: Cluster, namespace: str, targets_file: Path) -> int:
    """What Kubernetes discovery would find: the namespace's running pods annotated
    prometheus.io/scrape, at their IP and the annotated port, labelled by node and pod."""
    targets = []
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        annotations = pod["metadata"].get("annotations") or {}
        ip = pod["status"].get("podIP")
        if annotations.get("prometheus.io/scrape") != "true" or not ip:
            continue
        if pod["metadata"]["labels"].get("app.kubernetes.io/component") != "probe":
            continue
        targets.append({
            "targets": [f"{ip}:{annotations['prometheus.io/port']}"],
            "labels": {"node": pod["spec"]["nodeName"], "pod": pod["metadata"]["name"]},
        })  # fmt: skip
    written = targets_file.with_suffix(".new")
    written.write_text(json.dumps(targets))
    written.replace(targets_file)  # Prometheus never reads half a file
    return len(targets)


def instant(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=5) as answer:
        return list(json.loads(answer.read())["data"]["result"])


def scraped_nodes(prometheus_url: str) -> set[str]:
    """The nodes of the probe pods Prometheus scrapes successfully."""
    return {s["metric"]["node"] for s in instant(prometheus_url, 'up{job="tsunagu-probes"} == 1')}


def median_rtt_ms(prometheus_url: str, source: str, target: str) -> float | None:
    """The probes' median RTT source → target over the operator's window, as Prometheus has it."""
    found = instant(prometheus_url, probe_quantile_query(0.5))
    for series in found:
        labels = series["metric"]
        if (labels.get("source_region"), labels.get("target_region")) == (source, target):
            return float(series["value"][1]) * 1000
    return None


def measured_link(cluster: Cluster, region: str, to: str) -> dict[str, Any] | None:
    links = cluster.get_json("region", region).get("status", {}).get("links") or []
    return next((link for link in links if link["to"] == to), None)


def test_probe_pods_in_two_regions_measure_each_other_for_the_operator(
    real_cluster: Cluster, helm: Helm, tmp_path: Path
) -> None:
    """The chart's probe DaemonSets run as real pods, one per kanto node and one on the kyushu
    node; each region's probes reach the other's Service through a delay proxy on the host (the
    WAN link: the kernel here has no netem), named by probes.peerAddresses. A real Prometheus
    finds the probe pods through the API server and scrapes them; the operator, a real pod of the
    chart, reads the RTTs from it and writes them into both Regions' status, source Prometheus.
    The Regions declare no link, so the RTT can only have come from the probes."""
    suffix = uuid.uuid4().hex[:6]
    system, release = f"tsunagu-system-{suffix}", f"tsunagu-{suffix}"
    ip = host_ip()
    real_cluster.apply({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": system, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }},
    })  # fmt: skip
    targets = tmp_path / "probe-targets.json"
    targets.write_text("[]")
    prometheus = PrometheusServer(
        tmp_path / "prometheus", (), listen_host=ip, config=probe_scrape_config(targets)
    )
    # Until the Services exist the proxies lead nowhere (the probes count refused connections).
    to_kyushu = DelayProxy("127.0.0.1", 9, listen_host=ip)
    to_kanto = DelayProxy("127.0.0.1", 9, listen_host=ip)
    for proxy in (to_kyushu, to_kanto):
        proxy.set_rtt_ms(INTER_REGION_RTT_MS)
    with prometheus, to_kyushu, to_kanto:
        values = {
            "image": {"repository": "tsunagu.local/operator", "tag": "dev", "pullPolicy": "Never"},
            "operator": {
                "retryIntervalSeconds": 2,
                "prometheus": {"url": prometheus.url, "intervalSeconds": 2},
            },
            "probes": {
                "enabled": True,
                "regions": [REAL_REGION, OTHER_REGION],
                "peerAddresses": {OTHER_REGION: to_kyushu.address, REAL_REGION: to_kanto.address},
            },
        }
        install = helm.run(
            "install", release, str(CHART), "--namespace", system, "--kubeconfig",
            real_cluster.kubeconfig, "--wait", "--timeout", "120s", values=values, check=False,
        )  # fmt: skip
        try:
            assert install.returncode == 0, f"helm install failed: {install.stderr}"
            assert "violate" not in install.stderr, f"Pod Security warnings: {install.stderr}"
            for region, proxy in ((OTHER_REGION, to_kyushu), (REAL_REGION, to_kanto)):
                name = f"{release}-probe-{region}"
                service = real_cluster.get_json("service", name, "-n", system)
                proxy.retarget(service["spec"]["clusterIP"], 7400)
            probes = real_cluster.get_json(
                "pods", "-n", system, "-l", "app.kubernetes.io/component=probe"
            )["items"]
            where = {p["spec"]["nodeName"]: p["metadata"]["labels"]["tsunagu.io/probe-region"]
                     for p in probes}  # fmt: skip
            assert where == dict(zip(ALL_NODE_NAMES, NODE_REGIONS, strict=True)), where
            assert write_probe_targets(real_cluster, system, targets) == len(ALL_NODE_NAMES)

            wait_until(lambda: scraped_nodes(prometheus.url) == set(ALL_NODE_NAMES),
                       timeout=60, message="Prometheus to scrape every probe pod")  # fmt: skip
            for region, to in ((REAL_REGION, OTHER_REGION), (OTHER_REGION, REAL_REGION)):
                # The status carries p95 + jitter, which a busy machine inflates; it can never
                # be below the delay on the path, which nothing but the probes could have seen.
                link = wait_until(
                    lambda region=region, to=to: measured_link(real_cluster, region, to),
                    timeout=90, message=f"{region} -> {to} in the Region's status",
                )  # fmt: skip
                assert link["source"] == "Prometheus", link
                assert link["rttMs"] >= INTER_REGION_RTT_MS, link
                # The probes' median is the delay itself, give or take the path's own cost.
                wait_until(
                    lambda region=region, to=to: close_to(
                        median_rtt_ms(prometheus.url, region, to) or 0.0, INTER_REGION_RTT_MS
                    ),
                    timeout=60, message=f"the probes' median {region} -> {to} near the delay",
                )  # fmt: skip
        except BaseException:
            for region in (REAL_REGION, OTHER_REGION):
                status = real_cluster.get_json("region", region).get("status", {})
                print(f"--- Region {region} links: {status.get('links')}")
            print(f"--- prometheus ---\n{prometheus.log()}")
            for pod in real_cluster.get_json("pods", "-n", system)["items"]:
                name = pod["metadata"]["name"]
                log = real_cluster.kubectl("logs", name, "-n", system, check=False).stdout
                print(f"--- {name} ---\n{log[-2000:]}")
            raise
        finally:
            helm.run(
                "uninstall", release, "--namespace", system, "--kubeconfig",
                real_cluster.kubeconfig, "--wait", check=False,
            )  # fmt: skip
            real_cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)
            wait_for_namespace_gone(real_cluster, system, timeout=180)


def test_down_leaves_the_host_as_it_was(real_cluster: Cluster) -> None:
    """Last of the module: the real nodes go, and with them every process, mount, cgroup, link,
    iptables chain, nft table, runtime directory and sysctl change they made. The control plane
    stays up (as the other suites leave theirs), so the next run only starts the nodes again."""
    recorded = recorded_host_state()
    result = subprocess.run(
        [str(HACK / "realnodes.sh"), "down"],
        capture_output=True, text=True, check=False, env=real_cluster_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert host_leftovers(recorded) == []
