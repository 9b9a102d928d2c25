"""The operator learns each workload class's sensitivity from its jobs' own throughput, end to
end: a test exporter plays the training programs (a counter per Running pod, increasing at the
rate a ground-truth curve per class gives for the RTT of the pod's region to the data), a real
Prometheus scrapes it, and the operator's learner fills the classes' ThroughputProfiles until
they are trusted. Then the learned curves, not the reference curve, place the next jobs: an
insensitive class runs remotely where the reference curve refused it, a sensitive one is kept
near its data where the reference curve sent it away.

The truth is the test's secret; the operator sees the counters only. Regions and RTTs are the
Japan topology's declared links (tokyo holds the data: osaka 6 ms, hiroshima 11 ms, fukuoka
15 ms away)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.latency_harness import PrometheusServer
from tests.support.scenario import (
    condition,
    dataset,
    events_for,
    fill_region,
    free_port,
    japan_regions,
    job_pods,
    region_of,
    training_job,
    wait_condition,
    wait_ready,
)
from tests.support.training_exporter import TrainingExporter
from tests.support.waiting import wait_until
from tsunagu.placement.throughput import curve_loss

pytestmark = pytest.mark.e2e

REGIONS = ("hokkaido", "tokyo", "osaka", "hiroshima", "fukuoka")
RTT_TO_DATA_MS = {"tokyo": 0.0, "osaka": 6.0, "hiroshima": 11.0, "fukuoka": 15.0}
BASELINE = 100.0  # samples per second per GPU next to the data
# The ground truth, unknown to the operator: (k per ms, RTT hidden by prefetching).
TRUTH = {
    "stream": (0.003, 0.0),  # large records, long steps: 4.3 % at 15 ms (reference: 12 %)
    "chatty": (0.05, 2.0),  # many small reads: 16.7 % at 6 ms (reference: 5.2 %)
}
WINDOW_SECONDS = 5
QUERY = f"sum by (namespace, job) (rate(tsunagu_training_samples_total[{WINDOW_SECONDS}s]))"


def true_loss(workload_class: str, rtt_ms: float) -> float:
    k, hidden = TRUTH[workload_class]
    return curve_loss(k, hidden, rtt_ms)


def curve(workload_class: str) -> Callable[[float], float]:
    return lambda rtt: BASELINE * (1 - true_loss(workload_class, rtt))


@pytest.fixture
def exporter(cluster: Cluster, namespace: str) -> Iterator[TrainingExporter]:
    curves = {name: curve(name) for name in TRUTH}
    with TrainingExporter(cluster, namespace, curves, RTT_TO_DATA_MS) as running:
        yield running


@pytest.fixture
def prometheus(tmp_path: Path, exporter: TrainingExporter) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        tmp_path / "prom", [exporter.target], scrape_interval=1, job_name="training",
        honor_labels=True,
    )  # fmt: skip
    with server:
        yield server


@pytest.fixture
def learning_operator(
    cluster: Cluster,
    run_operator: Callable[..., OperatorProcess],
    prometheus: PrometheusServer,
) -> OperatorProcess:
    cluster.apply(japan_regions())
    port = free_port()
    operator = run_operator(
        "--liveness-port", str(port), "--metrics-port", "0", "--retry-interval", "2",
        "--prometheus-url", prometheus.url, "--latency-interval", "30",
        "--throughput-interval", "2", "--throughput-query", QUERY,
        "--throughput-warmup-seconds", str(WINDOW_SECONDS + 3),
    )  # fmt: skip
    wait_ready(operator, port)
    return operator


def job_of(
    namespace: str, name: str, workload_class: str, regions: tuple[str, ...], **placement: Any
) -> dict[str, Any]:
    """A one-node job of a class that may run only in `regions`."""
    excluded = [r for r in REGIONS if r not in regions]
    body = training_job(
        namespace, name, "corpus", replicas=1, gpus=8, excludedRegions=excluded, **placement
    )
    body["spec"]["workloadClass"] = workload_class
    return body


def trusted_profile(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def trusted() -> dict[str, Any] | None:
        profile = cluster.get_json("throughputprofile", name, "-n", namespace)
        return profile if (profile.get("status") or {}).get("trusted") else None

    try:
        return wait_until(trusted, timeout=120, interval=1, message=f"profile {name} trusted")
    except AssertionError as error:
        found = cluster.get_json("throughputprofiles", "-n", namespace)["items"]
        raise AssertionError(f"{error}; profiles were {[p.get('status') for p in found]}") from None


def predicted_loss(profile: dict[str, Any], rtt_ms: float) -> float:
    model = profile["status"]["model"]
    return curve_loss(model["k"], model.get("hiddenRttMs", 0.0), rtt_ms)


def test_the_operator_learns_each_class_and_places_by_what_it_learned(
    cluster: Cluster, namespace: str, exporter: TrainingExporter,
    learning_operator: OperatorProcess,
) -> None:  # fmt: skip
    cluster.apply(dataset(namespace, "corpus", "tokyo", "RemoteAccess"))
    # The baseline: one job of each class next to the data. Then tokyo is full.
    for name in ("stream", "chatty"):
        cluster.apply(job_of(namespace, f"{name}-tokyo", name, ("tokyo",)))
    for name in ("stream", "chatty"):
        wait_condition(cluster, namespace, f"{name}-tokyo", "Running", "True")
    fillers = fill_region(cluster, namespace, "tokyo", only_free=True)
    assert fillers, "tokyo should have had free nodes left"

    # What the reference curve decides, before anything is learned (only local samples yet).
    target = job_of(namespace, "stream-target", "stream", ("tokyo", "fukuoka"),
                    maxThroughputLoss=0.08)  # fmt: skip
    cluster.apply(target)
    waiting = wait_condition(
        cluster, namespace, "stream-target", "Scheduled", "False", "InsufficientCapacity"
    )
    verdicts = {a["region"]: a for a in waiting["status"]["placement"]["alternatives"]}
    assert verdicts["fukuoka"]["reason"] == "ThroughputLossBudget"
    assert verdicts["fukuoka"]["predictedThroughputLoss"] == pytest.approx(0.12, abs=0.005)
    cluster.apply(job_of(namespace, "chatty-ref", "chatty", ("tokyo", "osaka"),
                         maxThroughputLoss=0.10))  # fmt: skip
    sent_away = wait_condition(cluster, namespace, "chatty-ref", "Scheduled", "True", "Placed")
    assert sent_away["status"]["placement"]["region"] == "osaka"
    assert sent_away["status"]["placement"]["predictedThroughputLoss"] == pytest.approx(
        0.052, abs=0.003
    )

    # Jobs of both classes away from the data, at two more RTTs (chatty-ref reads from osaka).
    for name, region in (("stream", "osaka"), ("stream", "hiroshima"), ("stream", "fukuoka"),
                         ("chatty", "hiroshima"), ("chatty", "fukuoka")):  # fmt: skip
        cluster.apply(job_of(namespace, f"{name}-{region}", name, (region,)))

    for name in TRUTH:
        profile = trusted_profile(cluster, namespace, name)
        assert profile["spec"] == {"workloadClass": name}
        regions = {s["region"] for s in profile["status"]["samples"]}
        assert {"tokyo", "hiroshima", "fukuoka"} <= regions
        assert profile["status"]["baseline"] == pytest.approx(BASELINE, rel=0.01)
        for rtt in (6.0, 11.0, 15.0):
            truth = true_loss(name, rtt)
            assert predicted_loss(profile, rtt) == pytest.approx(truth, rel=0.2), (name, rtt)
        events = [e for e in events_for(cluster, namespace, name)
                  if e["involvedObject"]["kind"] == "ThroughputProfile"]  # fmt: skip
        assert "RuleHolds" in {e["reason"] for e in events}
        assert condition(profile, "Trusted") is not None

    # The insensitive class runs remotely where the reference curve refused it.
    placed = wait_condition(cluster, namespace, "stream-target", "Scheduled", "True", "Placed")
    placement = placed["status"]["placement"]
    assert placement["region"] == "fukuoka"
    assert placement["predictedThroughputLoss"] < 0.08
    assert "of class stream" in placement["model"]
    assert region_of(cluster, namespace, "stream-target") == {"fukuoka"}

    # The sensitive class is kept near its data where the reference curve sent it away.
    cluster.apply(job_of(namespace, "chatty-near", "chatty", ("tokyo", "osaka"),
                         maxThroughputLoss=0.10))  # fmt: skip
    kept = wait_condition(
        cluster, namespace, "chatty-near", "Scheduled", "False", "InsufficientCapacity"
    )
    osaka = {a["region"]: a for a in kept["status"]["placement"]["alternatives"]}["osaka"]
    assert osaka["reason"] == "ThroughputLossBudget"
    assert osaka["predictedThroughputLoss"] == pytest.approx(true_loss("chatty", 6), rel=0.2)
    assert job_pods(cluster, namespace, "chatty-near") == []
    cluster.kubectl("delete", "pod", fillers[0], "-n", namespace, "--grace-period=0", "--force")
    near = wait_condition(cluster, namespace, "chatty-near", "Scheduled", "True", "Placed")
    assert near["status"]["placement"]["region"] == "tokyo"
    assert region_of(cluster, namespace, "chatty-near") == {"tokyo"}
    assert learning_operator.running
