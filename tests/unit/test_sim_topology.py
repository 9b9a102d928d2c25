"""Built-in topologies and topology files."""

from __future__ import annotations

import itertools
import re
import textwrap
from pathlib import Path

import pytest

from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.throughput import fibre_floor_ms
from tsunagu.sim.errors import SimInputError
from tsunagu.sim.prefectures import KYUSHU
from tsunagu.sim.topology import japan, small
from tsunagu.sim.topology_file import load_topology

JAPAN = japan()
JAPAN_LATENCY = LatencyMatrix.build(JAPAN.regions)
REPO = Path(__file__).resolve().parents[2]


def _rtt(a: str, b: str) -> float:
    link = JAPAN_LATENCY.link(a, b, 0.0)
    assert link is not None, f"{a}↔{b} unknown"
    return link.rtt_ms


def test_japan_has_every_prefecture_once() -> None:
    codes = [region.prefecture for region in JAPAN.regions]
    assert codes == [f"JP-{number:02d}" for number in range(1, 48)]
    names = JAPAN.region_names()
    assert len(set(names)) == 47
    assert all(re.fullmatch(r"[a-z]([a-z0-9-]*[a-z0-9])?", name) for name in names)
    assert {"tokyo", "osaka", "fukuoka", "hokkaido", "okinawa"} <= set(names)


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [
        pytest.param("tokyo", "fukuoka", 14.5, 15.5, id="tokyo-fukuoka-calibration"),
        pytest.param("tokyo", "osaka", 6.0, 9.0, id="tokyo-osaka"),
        pytest.param("tokyo", "hokkaido", 12.0, 16.0, id="tokyo-hokkaido"),
        pytest.param("tokyo", "okinawa", 22.0, 30.0, id="tokyo-okinawa"),
        pytest.param("tokyo", "kanagawa", 1.5, 3.0, id="tokyo-neighbour"),
        pytest.param("tokyo", "tokyo", 0.0, 0.0, id="same-region"),
    ],
)
def test_japan_rtt_is_plausible(a: str, b: str, low: float, high: float) -> None:
    assert low <= _rtt(a, b) <= high
    assert _rtt(a, b) == _rtt(b, a)


def test_japan_rtt_never_beats_the_fibre_floor() -> None:
    regions = {region.name: region for region in JAPAN.regions}
    for a, b in itertools.combinations(regions, 2):
        location_a, location_b = regions[a].location, regions[b].location
        assert location_a is not None
        assert location_b is not None
        assert _rtt(a, b) >= fibre_floor_ms(location_a, location_b), (a, b)


def test_japan_default_puts_gpus_and_green_power_far_from_the_data() -> None:
    gpus = JAPAN.gpus_by_region()
    regions = {region.name: region for region in JAPAN.regions}
    remote = ["hokkaido", *KYUSHU]
    assert sum(gpus[name] for name in remote) > 4 * (gpus["tokyo"] + gpus["osaka"])
    for name in remote:
        for data_site in ("tokyo", "osaka"):
            assert regions[name].gpu_hour_price < regions[data_site].gpu_hour_price
            assert regions[name].carbon_intensity < regions[data_site].carbon_intensity


def test_small_is_five_regions_with_gpus() -> None:
    topology = small()
    assert len(topology.regions) == 5
    assert all(gpus > 0 for gpus in topology.gpus_by_region().values())


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(path)


COMPACT = """\
    gpusPerNode: 4
    nodesPerRegion: 2
    regions:
      - name: tokyo
        gpuHourPrice: 3
        location: {latitude: 35.69, longitude: 139.69}
        links: [{to: fukuoka, rttMs: 15, kind: APN}]
      - name: fukuoka
        nodes: 3
        gpusPerNode: 8
        location: {latitude: 33.61, longitude: 130.42}
      - name: sapporo
        nodes: 1
        location: {latitude: 43.06, longitude: 141.35}
    latencyModel: {routeFactor: 1.5, overheadMs: 1}
"""

KUBERNETES = """\
    apiVersion: tsunagu.io/v1alpha1
    kind: Region
    metadata: {name: tokyo}
    spec: {links: [{to: fukuoka, rttMs: 15}]}
    ---
    apiVersion: tsunagu.io/v1alpha1
    kind: Region
    metadata: {name: fukuoka}
    ---
    apiVersion: v1
    kind: List
    items:
      - apiVersion: v1
        kind: Node
        metadata:
          name: n1
          labels: {topology.kubernetes.io/region: fukuoka}
        status: {allocatable: {nvidia.com/gpu: "8"}}
    ---
    apiVersion: tsunagu.io/v1alpha1
    kind: TrainingJob
    metadata: {name: ignored}
"""


def test_compact_file_loads(tmp_path: Path) -> None:
    topology = load_topology(_write(tmp_path, "compact.yaml", COMPACT))
    assert topology.gpus_by_region() == {"tokyo": 8, "fukuoka": 24, "sapporo": 4}
    latency = LatencyMatrix.build(topology.regions)
    declared = latency.link("tokyo", "fukuoka", 0.0)
    modelled = latency.link("sapporo", "fukuoka", 0.0)
    assert declared is not None
    assert declared.rtt_ms == 15
    assert modelled is not None
    assert modelled.rtt_ms > 15


def test_kubernetes_file_loads(tmp_path: Path) -> None:
    topology = load_topology(_write(tmp_path, "objects.yaml", KUBERNETES))
    assert topology.region_names() == ("tokyo", "fukuoka")
    assert topology.gpus_by_region() == {"tokyo": 0, "fukuoka": 8}


def test_the_repository_topology_loads() -> None:
    topology = load_topology(str(REPO / "hack" / "topology" / "japan.yaml"))
    assert "fukuoka" in topology.region_names()
    assert topology.total_gpus() > 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("regions: []\n", "regions", id="no-regions"),
        pytest.param(
            "regions: [{name: a, gpuHourPrice: -1}]\n",
            "regions[0].gpuHourPrice",
            id="negative-price",
        ),
        pytest.param("regions: [{name: a, nodes: two}]\n", "regions[0].nodes", id="nodes-text"),
        pytest.param(
            "regions: [{name: a, colour: red}]\n", "regions[0].colour", id="unknown-field"
        ),
        pytest.param("regions: [{gpuHourPrice: 1}]\n", "regions[0].name", id="no-name"),
        pytest.param(
            "regions: [{name: a, links: [{to: b, rttMs: 3}]}]\n",
            "Region a.links[0].to",
            id="link-to-unknown",
        ),
        pytest.param(
            "regions: [{name: a}]\nlatencyModel: {routeFactor: 0.5}\n",
            "latencyModel.routeFactor",
            id="route-factor-below-one",
        ),
        pytest.param(
            "kind: Region\nmetadata: {name: a}\nspec: {gpuHourPrice: cheap}\n",
            "document 1 (Region a) spec.gpuHourPrice",
            id="region-object-bad-price",
        ),
        pytest.param("kind: Node\nmetadata: {name: n}\n", "kind", id="objects-without-region"),
        pytest.param("regions: [{name: a}\n", "line 2", id="broken-yaml"),
    ],
)
def test_bad_topology_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(SimInputError) as caught:
        load_topology(path)
    assert caught.value.source == path
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
