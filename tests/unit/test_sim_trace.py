"""Synthetic traces and trace files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tsunagu.api.types import Objective, ResidencyMode
from tsunagu.sim.errors import SimInputError
from tsunagu.sim.topology import Topology, japan, make_node, small
from tsunagu.sim.trace import TraceParameters, generate
from tsunagu.sim.trace_file import check_regions, load_trace

JAPAN = japan()


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    parameters = TraceParameters(jobs=50)
    assert generate(JAPAN, parameters, 1) == generate(JAPAN, parameters, 1)
    assert generate(JAPAN, parameters, 1) != generate(JAPAN, parameters, 2)


@pytest.mark.parametrize("topology", [JAPAN, small()], ids=["japan", "small"])
def test_every_job_fits_its_home_and_arrives_in_order(topology: Topology) -> None:
    trace = generate(topology, TraceParameters(jobs=200), 5)
    gpus = topology.gpus_by_region()
    arrivals = [job.arrival_seconds for job in trace.jobs]
    assert arrivals == sorted(arrivals)
    assert len({job.key for job in trace.jobs}) == 200
    for job in trace.jobs:
        assert job.dataset is not None
        assert job.gpus <= gpus[job.dataset.home_region]
        assert job.duration_seconds > 0


def test_data_lives_mostly_in_tokyo_and_osaka() -> None:
    trace = generate(JAPAN, TraceParameters(jobs=400), 3)
    homes = [job.dataset.home_region for job in trace.jobs if job.dataset]
    share = sum(home in ("tokyo", "osaka") for home in homes) / len(homes)
    assert 0.75 <= share <= 0.95
    modes = {job.dataset.residency.mode for job in trace.jobs if job.dataset}
    assert modes == set(ResidencyMode)


@pytest.mark.parametrize("load", [0.25, 1.0], ids=["light", "heavy"])
def test_load_sets_the_arrival_rate(load: float) -> None:
    trace = generate(JAPAN, TraceParameters(jobs=300, load=load), 11)
    span = trace.jobs[-1].arrival_seconds
    offered = sum(job.gpus * job.duration_seconds for job in trace.jobs) / span
    assert offered / JAPAN.total_gpus() == pytest.approx(load, rel=0.2)


CSV = """\
name,arrivalSeconds,durationSeconds,replicas,gpusPerReplica,datasetHome,residency,replicaRegions,maxRttMs,objective
a,0,3600,2,4,tokyo,Replicated,fukuoka;osaka,20,Cheapest
b,30,600,,,,,,,
"""

YAML = """\
jobs:
  - name: a
    arrivalSeconds: 0
    durationSeconds: 3600
    replicas: 2
    gpusPerReplica: 4
    datasetHome: tokyo
    residency: Replicated
    replicaRegions: [fukuoka, osaka]
    maxRttMs: 20
    objective: Cheapest
  - {name: b, arrivalSeconds: 30, durationSeconds: 600}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("name", "text"), [("t.csv", CSV), ("t.yaml", YAML)], ids=["csv", "yaml"])
def test_trace_files(tmp_path: Path, name: str, text: str) -> None:
    trace = load_trace(_write(tmp_path, name, text))
    first, second = trace.jobs
    assert (first.spec.name, first.gpus, first.duration_seconds) == ("a", 8, 3600)
    assert first.dataset is not None
    assert first.dataset.residency.mode == ResidencyMode.Replicated
    assert first.dataset.residency.replica_regions == {"fukuoka", "osaka"}
    assert first.spec.placement.max_rtt_ms == 20
    assert first.spec.placement.objective == Objective.Cheapest
    assert (second.spec.name, second.dataset, second.gpus) == ("b", None, 1)
    assert second.spec.placement.max_rtt_ms is None


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        pytest.param(
            "t.csv",
            "name,arrivalSeconds\na,0\n",
            "row 2 (a).durationSeconds",
            id="missing-duration",
        ),
        pytest.param(
            "t.csv",
            "name,arrivalSeconds,durationSeconds\na,-1,5\n",
            "row 2 (a).arrivalSeconds",
            id="negative-arrival",
        ),
        pytest.param(
            "t.csv",
            "name,arrivalSeconds,durationSeconds,replicas\na,0,5,two\n",
            "row 2 (a).replicas",
            id="replicas-text",
        ),
        pytest.param(
            "t.csv",
            "name,arrivalSeconds,durationSeconds,maxThroughputLoss\na,0,5,2\n",
            "row 2 (a).maxThroughputLoss",
            id="loss-above-one",
        ),
        pytest.param("t.csv", "name,arrival\na,0\n", "column 'arrival'", id="unknown-column"),
        pytest.param(
            "t.csv",
            "name,arrivalSeconds,durationSeconds,residency\na,0,5,Everywhere\n",
            "row 2 (a).residency",
            id="bad-residency",
        ),
        pytest.param(
            "t.yaml",
            "- {name: a, arrivalSeconds: 0, durationSeconds: 0}\n",
            "[0] (a).durationSeconds",
            id="zero-duration",
        ),
        pytest.param(
            "t.yaml",
            "jobs: [{arrivalSeconds: 0, durationSeconds: 1}]\n",
            "jobs[0].name",
            id="no-name",
        ),
        pytest.param(
            "t.yaml",
            "jobs:\n- {name: a, arrivalSeconds: 0, durationSeconds: 1}\n"
            "- {name: a, arrivalSeconds: 1, durationSeconds: 1}\n",
            "jobs[1] (a).name",
            id="duplicate-name",
        ),
        pytest.param(
            "t.yaml",
            "- {name: a, arrivalSeconds: 0, durationSeconds: 1, bytesPerStep: 10}\n",
            "[0] (a).requestsPerStep",
            id="partial-profile",
        ),
        pytest.param(
            "t.yaml",
            "- {name: a, arrivalSeconds: 0, durationSeconds: 1, replicaRegions: [x]}\n",
            "[0] (a).replicaRegions",
            id="replicas-without-replicated",
        ),
        pytest.param("t.txt", "", "", id="unknown-extension"),
    ],
)
def test_bad_trace_names_file_and_field(tmp_path: Path, name: str, text: str, field: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(SimInputError) as caught:
        load_trace(path)
    assert (caught.value.source, caught.value.field) == (path, field)
    assert "\n" not in str(caught.value)


def test_trace_naming_an_unknown_region(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "t.csv", "name,arrivalSeconds,durationSeconds,datasetHome\na,0,5,atlantis\n"
    )
    trace = load_trace(path)
    with pytest.raises(SimInputError) as caught:
        check_regions(path, trace, small())
    assert caught.value.field == "job a.datasetHome"
    assert "atlantis" in str(caught.value)


def test_replica_regions_need_replicated(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "t.yaml",
        "- {name: a, arrivalSeconds: 0, durationSeconds: 1, "
        "datasetHome: tokyo, replicaRegions: [osaka]}\n",
    )
    with pytest.raises(SimInputError) as caught:
        load_trace(path)
    assert caught.value.field == "[0] (a).replicaRegions"
    assert "Replicated" in caught.value.problem


def test_gangs_fit_whole_nodes_of_their_home() -> None:
    regions = tuple(region for region in small().regions if region.name in ("tokyo", "osaka"))
    nodes = (
        make_node("tokyo-a", "tokyo", 3, None),
        make_node("tokyo-b", "tokyo", 3, None),
        make_node("osaka-a", "osaka", 2, None),
    )
    topology = Topology("tiny", regions, nodes)
    trace = generate(topology, TraceParameters(jobs=200), 9)
    room = {"tokyo": [3, 3], "osaka": [2]}
    for job in trace.jobs:
        assert job.dataset is not None
        per_replica = job.spec.gpus_per_replica
        slots = sum(free // per_replica for free in room[job.dataset.home_region])
        assert job.spec.replicas <= slots, job.spec.name
