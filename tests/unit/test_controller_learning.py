"""The throughput learner: running jobs' throughput from a Prometheus vector becomes samples of
their class's ThroughputProfile (created when missing), refitted and written only when
something changed; bad series, failed queries and one failing profile are counted, never fatal.

The learner is the real object over the real tracker, catalog and status book, with a stand-in
Prometheus and an API client that records what it is asked to write."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from tests.unit.test_controller_loops import region
from tsunagu.api.profiles import ThroughputProfile
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Conflict, Kube, NotLeading
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.lifecycle.learning import ThroughputLearner
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import timestamp
from tsunagu.controller.report.statusbook import StatusBook
from tsunagu.controller.settings import LearningSettings

NOW = 1_796_115_600.0
K = 0.002  # per ms: the ground truth of the class in these tests


class Recorder:
    """The API client: records creates and status patches; `fail` names profiles that fail."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: dict[str, BaseException] = {}
        self.exists: set[str] = set()

    async def create_throughput_profile(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if name in self.exists:
            raise Conflict(name)
        self.created.append(body)
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}", "generation": 1}}

    async def patch_throughput_profile_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        if name in self.fail:
            raise self.fail[name]
        self.patched.append((namespace, name, status))


class Events:
    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []

    def post_event(self, event: dict[str, Any]) -> None:
        self.posted.append(event)


class Prometheus:
    def __init__(self) -> None:
        self.result: object = []
        self.error: Exception | None = None
        self.queries: list[str] = []

    def custom_query(self, query: str) -> object:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return self.result


def job_body(name: str, workload_class: str | None = "llm", gpus: int = 4) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "datasetRef": {"name": "corpus"},
        "replicas": 1,
        "gpusPerReplica": gpus,
        "placement": {"mode": "Bind"},
    }
    if workload_class:
        spec["workloadClass"] = workload_class
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "generation": 1},
        "spec": spec,
    }


class World:
    def __init__(self, **settings: Any) -> None:
        self.catalog = Catalog()
        self.catalog.upsert_region(region("tokyo"))
        self.catalog.upsert_region(region("osaka", [{"to": "tokyo", "rttMs": 6}]))
        self.catalog.upsert_region(region("fukuoka", [{"to": "tokyo", "rttMs": 15}]))
        self.catalog.upsert_dataset(
            {
                "apiVersion": "tsunagu.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": "corpus", "namespace": "team"},
                "spec": {"homeRegion": "tokyo", "residency": {"mode": "RemoteAccess"}},
            }
        )
        self.jobs = JobTracker()
        self.client = Recorder()
        self.statuses = StatusBook(cast(Kube, self.client))
        self.events = Events()
        self.prometheus = Prometheus()
        self.learner = ThroughputLearner(
            jobs=self.jobs, catalog=self.catalog, statuses=self.statuses,
            events=EventRecorder(self.events, self.jobs), client=cast(Kube, self.client),
            prometheus=self.prometheus,
            settings=LearningSettings(interval_seconds=1, warmup_seconds=30, **settings),
            clock=lambda: NOW,
        )  # fmt: skip

    def run(self, name: str, region: str, running_for: float = 60, **body: Any) -> None:
        self.jobs.observe(job_body(name, **body))
        since = timestamp(NOW - running_for)
        self.statuses.seed(
            ("team", name),
            {
                "region": region,
                "conditions": [{"type": "Running", "status": "True", "lastTransitionTime": since}],
            },
        )

    def publish(self, rates: dict[str, float], at: float = NOW, namespace: str = "team") -> None:
        self.prometheus.result = [
            {"metric": {"namespace": namespace, "job": job}, "value": [at, str(rate)]}
            for job, rate in rates.items()
        ]

    def learn(self) -> None:
        asyncio.run(self.learner.learn_once())

    def profile(self, name: str = "llm") -> ThroughputProfile:
        found = self.catalog.profiles.get(("team", name))
        assert found is not None
        return found


def truth(rtt: float, baseline: float = 100.0) -> float:
    """Throughput per GPU of the class at `rtt` (the reference curve's shape with K)."""
    return baseline / (1 + K * rtt)


def rejected(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "tsunagu_throughput_samples_rejected_total", {"reason": reason}
    )
    return value or 0.0


def errors() -> float:
    value = REGISTRY.get_sample_value(
        "tsunagu_internal_errors_total", {"loop": "throughput-learning"}
    )
    return value or 0.0


def test_a_class_without_a_profile_gets_one_with_a_sample_per_running_job() -> None:
    world = World()
    world.run("home", "tokyo", gpus=4)
    world.run("away", "fukuoka", gpus=8)
    world.publish({"home": 4 * truth(0), "away": 8 * truth(15)})
    world.learn()
    assert [c["metadata"] for c in world.client.created] == [{"name": "llm", "namespace": "team"}]
    assert world.client.created[0]["spec"] == {"workloadClass": "llm"}
    ((namespace, name, status),) = world.client.patched
    assert (namespace, name) == ("team", "llm")
    samples = {(s["region"], s["rttMs"]): s["throughput"] for s in status["samples"]}
    # Per GPU, at the RTT to the nearest copy of the data (0 next to it).
    assert samples == {("tokyo", 0.0): pytest.approx(truth(0)),
                       ("fukuoka", 15.0): pytest.approx(truth(15))}  # fmt: skip
    assert status["baseline"] == pytest.approx(truth(0))
    assert status["trusted"] is False
    assert status["conditions"][0]["reason"] == "RuleNotMet"
    assert status["observedGeneration"] == 1
    # The catalog has the fit at once, before the watch shows the write.
    assert len(world.profile().samples) == 2
    assert world.profile().uid == "uid-llm"


def test_the_profile_becomes_trusted_with_an_event_and_its_fit_recovers_the_truth() -> None:
    world = World()
    places = {"home": ("tokyo", 0), "near": ("osaka", 6), "far": ("fukuoka", 15)}
    for name, (place, _) in places.items():
        world.run(name, place)
    for round_ in range(3):
        world.publish({name: 4 * truth(rtt) for name, (_, rtt) in places.items()},
                      at=NOW + 10 * round_)  # fmt: skip
        world.learn()
        status = world.client.patched[-1][2]
        # Two samples away from the data a round: the rule wants five.
        assert status["trusted"] is (round_ == 2)
    assert status["model"]["k"] == pytest.approx(K, rel=0.01)
    assert status["conditions"][0]["reason"] == "RuleHolds"
    (event,) = world.events.posted
    assert (event["type"], event["reason"]) == ("Normal", "RuleHolds")
    assert event["involvedObject"]["kind"] == "ThroughputProfile"
    assert event["involvedObject"]["name"] == "llm"
    assert event["involvedObject"]["uid"] == "uid-llm"


PLACES = ("tokyo", "osaka", "fukuoka", "osaka", "fukuoka", "osaka", "fukuoka")


def learned_in_one_round() -> World:
    """Seven jobs, six away from the data at two RTTs: enough for the rule in one round."""
    world = World()
    rtt = {"tokyo": 0, "osaka": 6, "fukuoka": 15}
    for index, place in enumerate(PLACES):
        world.run(f"j{index}", place)
    world.publish({f"j{i}": 4 * truth(rtt[p]) for i, p in enumerate(PLACES)})
    world.learn()
    return world


def test_first_round_with_enough_samples_is_trusted_at_once() -> None:
    world = learned_in_one_round()
    assert world.client.patched[-1][2]["trusted"] is True
    assert world.catalog.engine_for("team", _engine()).fitted_models["llm"].trusted


def test_a_profile_whose_samples_stop_fitting_is_no_longer_trusted_with_a_warning() -> None:
    world = learned_in_one_round()
    assert world.client.patched[-1][2]["trusted"] is True
    # The class changed its ways: half the speed 6 ms away, full speed 15 ms away.
    odd = {"tokyo": 100.0, "osaka": 50.0, "fukuoka": 99.0}
    world.publish({f"j{i}": 4 * odd[p] for i, p in enumerate(PLACES)}, at=NOW + 60)
    world.learn()
    status = world.client.patched[-1][2]
    assert status["trusted"] is False
    condition = status["conditions"][0]
    assert condition["reason"] == "RuleNotMet"
    assert "RMS error" in condition["message"]
    assert [(e["type"], e["reason"]) for e in world.events.posted] == [
        ("Normal", "RuleHolds"), ("Warning", "RuleNotMet"),
    ]  # fmt: skip
    assert world.events.posted[-1]["message"] == condition["message"]
    assert not world.catalog.engine_for("team", _engine()).fitted_models["llm"].trusted


def _engine() -> Any:
    from tsunagu.placement.engine import EngineSettings

    return EngineSettings()


def test_the_same_samples_again_write_nothing() -> None:
    world = World()
    world.run("home", "tokyo")
    world.publish({"home": 400.0})
    world.learn()
    world.learn()
    assert len(world.client.patched) == 1


def test_a_failed_query_keeps_the_profiles_and_the_next_round_learns() -> None:
    world = World()
    world.run("home", "tokyo")
    world.prometheus.error = ConnectionError("refused")
    before = REGISTRY.get_sample_value("tsunagu_throughput_query_failures_total") or 0.0
    world.learn()
    assert REGISTRY.get_sample_value("tsunagu_throughput_query_failures_total") == before + 1
    assert world.client.created == []
    assert world.client.patched == []
    world.prometheus.error = None
    world.publish({"home": 400.0})
    world.learn()
    assert len(world.client.patched) == 1


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param(lambda w: None, "unknown_job", id="no-such-job"),
        pytest.param(lambda w: w.run("j", "tokyo", workload_class=None), "unknown_job",
                     id="no-class"),
        pytest.param(lambda w: w.run("j", "tokyo", running_for=5), "warming_up", id="warming-up"),
        pytest.param(lambda w: w.run("j", "hokkaido"), "rtt_unknown", id="rtt-unknown"),
    ],
)  # fmt: skip
def test_series_of_jobs_that_cannot_be_sampled_are_counted(setup: Any, reason: str) -> None:
    world = World()
    setup(world)
    world.publish({"j": 400.0})
    before = rejected(reason)
    world.learn()
    assert rejected(reason) == before + 1
    assert world.client.created == []
    assert world.client.patched == []


def test_garbage_series_are_counted_by_reason_and_the_good_ones_learned() -> None:
    world = World()
    world.run("home", "tokyo")
    world.run("twice", "osaka")
    world.prometheus.result = [
        {"metric": {"namespace": "team", "job": "home"}, "value": [NOW, "400"]},
        {"metric": {"namespace": "team", "job": "nan"}, "value": [NOW, "NaN"]},
        {"metric": {"namespace": "team", "job": "twice"}, "value": [NOW, "300"]},
        {"metric": {"namespace": "team", "job": "twice"}, "value": [NOW, "310"]},
        {"metric": {"job": "no-namespace"}, "value": [NOW, "1"]},
        "garbage",
    ]
    before = {r: rejected(r) for r in ("not_a_number", "duplicate_job", "missing_label",
                                       "malformed")}  # fmt: skip
    world.learn()
    assert {r: rejected(r) - before[r] for r in before} == {
        "not_a_number": 1, "duplicate_job": 1, "missing_label": 1, "malformed": 1,
    }  # fmt: skip
    ((_, _, status),) = world.client.patched
    assert [s["region"] for s in status["samples"]] == ["tokyo"]


@pytest.mark.parametrize(
    ("error", "written", "counted"),
    [
        pytest.param(RuntimeError("boom"), ["second"], 1, id="the-others-go-on"),
        pytest.param(NotLeading("not the leader"), [], 0, id="a-lost-lease-ends-the-round"),
    ],
)
def test_a_profile_that_cannot_be_written(
    error: BaseException, written: list[str], counted: int
) -> None:
    world = World()
    world.run("a", "tokyo", workload_class="first")
    world.run("b", "tokyo", workload_class="second")
    world.client.fail["first"] = error
    world.publish({"a": 100.0, "b": 200.0})
    before = errors()
    if isinstance(error, NotLeading):
        with pytest.raises(NotLeading):
            world.learn()
    else:
        world.learn()
    assert errors() == before + counted
    assert [name for _, name, _ in world.client.patched] == written


def test_without_creating_only_existing_profiles_are_updated() -> None:
    world = World(create_profiles=False)
    world.catalog.upsert_profile(
        {"metadata": {"name": "tuned", "namespace": "team"}, "spec": {"workloadClass": "vit"}}
    )
    world.run("a", "tokyo", workload_class="llm")
    world.run("b", "tokyo", workload_class="vit")
    world.publish({"a": 100.0, "b": 200.0})
    world.learn()
    assert world.client.created == []
    assert [name for _, name, _ in world.client.patched] == ["tuned"]


def test_a_name_taken_by_another_class_is_left_alone() -> None:
    world = World()
    world.client.exists.add("llm")
    world.run("a", "tokyo")
    world.publish({"a": 100.0})
    world.learn()
    assert world.client.patched == []
