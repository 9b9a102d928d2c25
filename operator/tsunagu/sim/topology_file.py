"""Reading a topology from a YAML file, in one of two forms.

1. Kubernetes objects — the same multi-document YAML `tsunagu plan` reads: `Region` objects and
   `v1 Node` objects (a `kind: List` is unpacked). Other kinds are ignored. Latency comes from the
   regions' declared links only, as in `tsunagu plan`.
2. The compact form of `hack/topology/*.yaml`: one mapping with a `regions` list whose entries
   hold `name` plus Region spec fields, `gpusPerNode` and `nodesPerRegion` at the top (defaults
   8 and 4) and, per region, `nodes` / `gpusPerNode` / `gpuProduct` to override them. An optional
   `latencyModel: {routeFactor, overheadMs}` fills every pair without a declared link from the
   great-circle distance of the two regions' `location`s.

Errors name the file and the field: `topo.yaml: regions[2].gpuHourPrice: must be a number ≥ 0`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tsunagu.api.documents import DocumentError, read_documents
from tsunagu.api.names import GPU_PRODUCT_LABEL, GPU_RESOURCE, REGION_LABEL
from tsunagu.api.parse import SpecError, parse_node, parse_region
from tsunagu.api.types import DeclaredLink, LinkKind, NodeInfo, RegionSpec
from tsunagu.sim.errors import SimInputError
from tsunagu.sim.topology import LatencyModel, Topology

_COMPACT_REGION_KEYS = frozenset(
    {
        "name",
        "prefecture",
        "displayName",
        "gpuHourPrice",
        "carbonIntensity",
        "cordoned",
        "location",
        "links",
        "nodeSelector",
        "zones",
        "gpuProduct",
        "nodes",
        "gpusPerNode",
    }
)
_REGION_SPEC_KEYS = (
    "prefecture",
    "displayName",
    "gpuHourPrice",
    "carbonIntensity",
    "cordoned",
    "location",
    "links",
    "nodeSelector",
)


def load_topology(path: str) -> Topology:
    """Reads FILE in either form; raises `SimInputError` naming the file and field."""
    documents = _read_documents(path)
    if len(documents) == 1 and isinstance(documents[0], dict) and "regions" in documents[0]:
        return _compact(path, documents[0])
    return _kubernetes(path, documents)


def _read_documents(path: str) -> list[Any]:
    try:
        documents = [document for _, document in read_documents(path)]
    except DocumentError as error:
        where = f"line {error.line}" if error.line is not None else ""
        raise SimInputError(path, where, error.problem) from None
    if not documents:
        raise SimInputError(path, "", "holds no topology (no documents)")
    return documents


def _unpacked(path: str, documents: list[Any]) -> Iterator[tuple[str, Any]]:
    for index, document in enumerate(documents):
        if isinstance(document, dict) and document.get("kind") == "List":
            items = document.get("items")
            if not isinstance(items, list):
                raise SimInputError(path, f"document {index + 1}.items", "must be a list")
            for item_index, item in enumerate(items):
                yield f"document {index + 1}.items[{item_index}]", item
        else:
            yield f"document {index + 1}", document


def _kubernetes(path: str, documents: list[Any]) -> Topology:
    regions: list[RegionSpec] = []
    nodes: list[NodeInfo] = []
    for where, document in _unpacked(path, documents):
        if not isinstance(document, dict):
            raise SimInputError(path, where, "must be a mapping (a Kubernetes object)")
        kind = document.get("kind")
        try:
            if kind == "Region":
                regions.append(parse_region(document))
            elif kind == "Node":
                nodes.append(parse_node(document))
        except SpecError as error:
            raise SimInputError(
                path, f"{where} ({error.kind} {error.name}) {error.field}", error.problem
            ) from None
    if not regions:
        raise SimInputError(path, "kind", "holds no Region object")
    return _checked(path, path, regions, nodes)


def _compact(path: str, document: dict[str, Any]) -> Topology:
    entries = document["regions"]
    if not isinstance(entries, list) or not entries:
        raise SimInputError(path, "regions", "must be a non-empty list")
    default_gpus = _count(path, "gpusPerNode", document.get("gpusPerNode", 8))
    default_nodes = _count(path, "nodesPerRegion", document.get("nodesPerRegion", 4))
    regions: list[RegionSpec] = []
    nodes: list[NodeInfo] = []
    for index, entry in enumerate(entries):
        where = f"regions[{index}]"
        if not isinstance(entry, dict):
            raise SimInputError(path, where, "must be a mapping")
        unknown = sorted(set(entry) - _COMPACT_REGION_KEYS)
        if unknown:
            raise SimInputError(path, f"{where}.{unknown[0]}", "is not a known field")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise SimInputError(path, f"{where}.name", "must be a non-empty string")
        region_object = {
            "kind": "Region",
            "metadata": {"name": name},
            "spec": {key: entry[key] for key in _REGION_SPEC_KEYS if key in entry},
        }
        try:
            regions.append(parse_region(region_object))
        except SpecError as error:
            raise SimInputError(
                path, f"{where}.{error.field.removeprefix('spec.')}", error.problem
            ) from None
        count = _count(path, f"{where}.nodes", entry.get("nodes", default_nodes))
        gpus = _count(path, f"{where}.gpusPerNode", entry.get("gpusPerNode", default_gpus))
        product = entry.get("gpuProduct")
        if product is not None and not isinstance(product, str):
            raise SimInputError(path, f"{where}.gpuProduct", "must be a string")
        nodes.extend(_compact_nodes(name, count, gpus, product))
    model_fields = document.get("latencyModel")
    if model_fields is not None:
        regions = _fill_links(path, regions, model_fields)
    return _checked(path, path, regions, nodes)


def _compact_nodes(region: str, count: int, gpus: int, product: str | None) -> list[NodeInfo]:
    result = []
    for index in range(count):
        labels = {REGION_LABEL: region}
        if product:
            labels[GPU_PRODUCT_LABEL] = product
        node_object = {
            "kind": "Node",
            "metadata": {"name": f"gpu-{region}-{index:03d}", "labels": labels},
            "status": {"allocatable": {GPU_RESOURCE: str(gpus)}},
        }
        result.append(parse_node(node_object))
    return result


def _count(path: str, field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SimInputError(path, field, "must be an integer ≥ 0")
    return value


def _fill_links(path: str, regions: list[RegionSpec], fields: object) -> list[RegionSpec]:
    if not isinstance(fields, dict):
        raise SimInputError(path, "latencyModel", "must be a mapping")
    values = {}
    for key, default in (("routeFactor", 1.5), ("overheadMs", 1.5)):
        value = fields.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SimInputError(path, f"latencyModel.{key}", "must be a number ≥ 0")
        values[key] = float(value)
    if values["routeFactor"] < 1:
        raise SimInputError(
            path, "latencyModel.routeFactor", "must be ≥ 1 (fibre never beats the great circle)"
        )
    model = LatencyModel(route_factor=values["routeFactor"], overhead_ms=values["overheadMs"])
    declared = {frozenset((region.name, link.to)) for region in regions for link in region.links}
    filled = []
    for index, region in enumerate(regions):
        extra = []
        for other in regions[index + 1 :]:
            pair = frozenset((region.name, other.name))
            if pair in declared or region.location is None or other.location is None:
                continue
            rtt = round(model.rtt_ms(region.location, other.location), 3)
            extra.append(DeclaredLink(other.name, rtt, None, LinkKind.Internet))
        filled.append(_with_links(region, region.links + tuple(extra)))
    return filled


def _with_links(region: RegionSpec, links: tuple[DeclaredLink, ...]) -> RegionSpec:
    return RegionSpec(
        name=region.name,
        prefecture=region.prefecture,
        display_name=region.display_name,
        gpu_hour_price=region.gpu_hour_price,
        carbon_intensity=region.carbon_intensity,
        cordoned=region.cordoned,
        links=links,
        location=region.location,
        node_selector=region.node_selector,
    )


def _checked(path: str, name: str, regions: list[RegionSpec], nodes: list[NodeInfo]) -> Topology:
    names = [region.name for region in regions]
    for index, region in enumerate(regions):
        if region.name in names[:index]:
            raise SimInputError(path, f"Region {region.name}", "is defined twice")
        for link_index, link in enumerate(region.links):
            if link.to not in names:
                raise SimInputError(
                    path,
                    f"Region {region.name}.links[{link_index}].to",
                    f"names an unknown region {link.to!r}",
                )
    return Topology(name=name, regions=tuple(regions), nodes=tuple(nodes))
