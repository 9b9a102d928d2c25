"""Simulated sites: regions, their GPU nodes and the modelled latency between them.

Built-in topologies:

* `japan` — one region per prefecture (47). RTT between two regions is
  `overhead + route_factor · fibre_floor(distance)`, calibrated so that Tokyo↔Fukuoka matches
  the ~15 ms measured in the 2025 APN pre-test; it can never fall below the fibre floor. The
  default capacity, price and carbon figures describe the problem tsunagu exists for: data in
  Tokyo and Osaka, GPUs and cheap, low-carbon power in Hokkaido and Kyushu.
* `small` — five of those regions, for quick runs and for the exhaustive `optimal` policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tsunagu.api.names import REGION_LABEL
from tsunagu.api.types import DeclaredLink, GeoPoint, LinkKind, NodeInfo, RegionSpec
from tsunagu.placement.throughput import fibre_floor_ms
from tsunagu.sim.prefectures import BY_REGION_NAME, KYUSHU, PREFECTURES, Prefecture

CALIBRATION_PAIR = ("tokyo", "fukuoka")
CALIBRATION_RTT_MS = 15.0
DEFAULT_OVERHEAD_MS = 1.5


@dataclass(frozen=True)
class Topology:
    """Everything the simulator needs to know about the sites; immutable."""

    name: str
    regions: tuple[RegionSpec, ...]
    nodes: tuple[NodeInfo, ...]

    def region_names(self) -> tuple[str, ...]:
        return tuple(region.name for region in self.regions)

    def gpus_by_region(self) -> dict[str, int]:
        totals = dict.fromkeys(self.region_names(), 0)
        for node in self.nodes:
            if node.region in totals and node.schedulable:
                totals[node.region] += node.allocatable_gpus
        return totals

    def total_gpus(self) -> int:
        return sum(self.gpus_by_region().values())


@dataclass(frozen=True)
class LatencyModel:
    """RTT as a fixed overhead (switching, serialisation) plus the fibre floor stretched by routing.

    Real fibre follows roads and rail, not great circles: `route_factor` is that detour.
    """

    route_factor: float
    overhead_ms: float

    @classmethod
    def calibrated(
        cls,
        a: GeoPoint,
        b: GeoPoint,
        target_rtt_ms: float = CALIBRATION_RTT_MS,
        overhead_ms: float = DEFAULT_OVERHEAD_MS,
    ) -> LatencyModel:
        """The model whose route factor makes the a↔b RTT equal `target_rtt_ms`."""
        floor = fibre_floor_ms(a, b)
        if floor <= 0 or target_rtt_ms - overhead_ms < floor:
            raise ValueError(
                f"cannot calibrate to {target_rtt_ms} ms: the fibre floor is {floor:.2f} ms"
            )
        return cls(route_factor=(target_rtt_ms - overhead_ms) / floor, overhead_ms=overhead_ms)

    def rtt_ms(self, a: GeoPoint, b: GeoPoint) -> float:
        if a == b:
            return 0.0
        floor = fibre_floor_ms(a, b)
        return max(floor, self.overhead_ms + self.route_factor * floor)


def location_of(prefecture: Prefecture) -> GeoPoint:
    return GeoPoint(latitude=prefecture.latitude, longitude=prefecture.longitude)


def japan_latency_model() -> LatencyModel:
    source, target = (BY_REGION_NAME[name] for name in CALIBRATION_PAIR)
    return LatencyModel.calibrated(location_of(source), location_of(target))


@dataclass(frozen=True)
class SiteProfile:
    """What one region offers: GPUs (whole nodes of `gpus_per_node`), price, carbon."""

    gpus: int
    gpu_hour_price: float
    carbon_intensity: float


_TOKYO = SiteProfile(gpus=32, gpu_hour_price=3.2, carbon_intensity=450)
_OSAKA = SiteProfile(gpus=24, gpu_hour_price=2.9, carbon_intensity=430)
_HOKKAIDO = SiteProfile(gpus=128, gpu_hour_price=1.6, carbon_intensity=180)
_KYUSHU_HUB = SiteProfile(gpus=96, gpu_hour_price=1.9, carbon_intensity=260)
_EDGE = SiteProfile(gpus=8, gpu_hour_price=2.8, carbon_intensity=470)
_EMPTY = SiteProfile(gpus=0, gpu_hour_price=2.8, carbon_intensity=470)

# Small edge sites in the big cities: a little capacity close to the data.
_METRO_EDGE = (
    "kanagawa",
    "saitama",
    "chiba",
    "miyagi",
    "niigata",
    "aichi",
    "kyoto",
    "hyogo",
    "okayama",
    "hiroshima",
)


def _default_japan_profiles() -> dict[str, SiteProfile]:
    profiles = dict.fromkeys(BY_REGION_NAME, _EMPTY)
    profiles.update(dict.fromkeys(_METRO_EDGE, _EDGE))
    kyushu_sizes = {
        "fukuoka": 96,
        "kumamoto": 48,
        "kagoshima": 32,
        "oita": 32,
        "saga": 16,
        "nagasaki": 16,
        "miyazaki": 16,
    }
    for name in KYUSHU:
        profiles[name] = SiteProfile(
            kyushu_sizes[name], _KYUSHU_HUB.gpu_hour_price, _KYUSHU_HUB.carbon_intensity
        )
    profiles.update(tokyo=_TOKYO, osaka=_OSAKA, hokkaido=_HOKKAIDO)
    return profiles


@dataclass(frozen=True)
class JapanParameters:
    """Knobs of the built-in topologies; every default is documented in docs/simulator.md."""

    profiles: Mapping[str, SiteProfile] = field(default_factory=_default_japan_profiles)
    gpus_per_node: int = 8
    gpu_product: str | None = None
    link_bandwidth_gbps: float = 100.0
    latency_model: LatencyModel | None = None  # None: calibrated on Tokyo↔Fukuoka


SMALL_REGIONS = ("tokyo", "osaka", "miyagi", "fukuoka", "hokkaido")
_SMALL_GPUS = {"tokyo": 16, "osaka": 8, "miyagi": 8, "fukuoka": 32, "hokkaido": 32}


def japan(parameters: JapanParameters | None = None) -> Topology:
    """All 47 prefectures."""
    return _build("japan", PREFECTURES, parameters or JapanParameters())


def small(parameters: JapanParameters | None = None) -> Topology:
    """Five regions: data-rich Tokyo and Osaka, a Tokyo neighbour, the Hokkaido and Fukuoka hubs."""
    base = parameters or JapanParameters()
    profiles = dict(base.profiles)
    for name, gpus in _SMALL_GPUS.items():
        profile = profiles[name]
        profiles[name] = SiteProfile(gpus, profile.gpu_hour_price, profile.carbon_intensity)
    chosen = tuple(BY_REGION_NAME[name] for name in SMALL_REGIONS)
    return _build(
        "small",
        chosen,
        JapanParameters(
            profiles=profiles,
            gpus_per_node=base.gpus_per_node,
            gpu_product=base.gpu_product,
            link_bandwidth_gbps=base.link_bandwidth_gbps,
            latency_model=base.latency_model,
        ),
    )


BUILT_IN = {"japan": japan, "small": small}


def _build(name: str, prefectures: Iterable[Prefecture], parameters: JapanParameters) -> Topology:
    chosen = tuple(prefectures)
    model = parameters.latency_model or japan_latency_model()
    regions = []
    nodes: list[NodeInfo] = []
    for index, prefecture in enumerate(chosen):
        profile = parameters.profiles.get(prefecture.region_name, _EMPTY)
        # One side of each pair declares the link; a declared link holds both ways.
        links = tuple(
            DeclaredLink(
                to=other.region_name,
                rtt_ms=round(model.rtt_ms(location_of(prefecture), location_of(other)), 3),
                bandwidth_gbps=parameters.link_bandwidth_gbps,
                kind=LinkKind("APN"),
            )
            for other in chosen[index + 1 :]
        )
        regions.append(
            RegionSpec(
                name=prefecture.region_name,
                prefecture=prefecture.code,
                display_name=f"{prefecture.capital} ({prefecture.code})",
                gpu_hour_price=profile.gpu_hour_price,
                carbon_intensity=profile.carbon_intensity,
                cordoned=False,
                links=links,
                location=location_of(prefecture),
                node_selector=None,
            )
        )
        nodes.extend(_nodes_for(prefecture.region_name, profile.gpus, parameters))
    return Topology(name=name, regions=tuple(regions), nodes=tuple(nodes))


def _nodes_for(region: str, gpus: int, parameters: JapanParameters) -> list[NodeInfo]:
    per_node = parameters.gpus_per_node
    counts = [per_node] * (gpus // per_node) + ([gpus % per_node] if gpus % per_node else [])
    return [
        make_node(f"gpu-{region}-{index:03d}", region, count, parameters.gpu_product)
        for index, count in enumerate(counts)
    ]


def make_node(name: str, region: str, gpus: int, gpu_product: str | None) -> NodeInfo:
    labels = [(REGION_LABEL, region)]
    if gpu_product:
        labels.append(("nvidia.com/gpu.product", gpu_product))
    return NodeInfo(
        name=name,
        region=region,
        allocatable_gpus=gpus,
        gpu_product=gpu_product,
        schedulable=True,
        labels=tuple(sorted(labels)),
    )
