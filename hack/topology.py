#!/usr/bin/env python3
"""Turns a topology file (hack/topology/*.yaml) into Kubernetes objects.

  topology.py nodes FILE [--nodes-per-region N]   v1 Node objects (a List) for kwok
  topology.py regions FILE                        tsunagu Region objects (a List)

Nodes carry the region, zone and GPU product labels and `nvidia.com/gpu` in their status, and the
kwok annotation so the kwok controller manages them. They are named `gpu-<region>-<index>`, or
`<nodeNamePrefix>-<index>` when the file sets `nodeNamePrefix` (one region only): the member
clusters of the multi-cluster tests give their nodes the same names, as unrelated clusters do.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        topology = yaml.safe_load(handle)
    if not isinstance(topology, dict) or not isinstance(topology.get("regions"), list):
        sys.exit(f"{path}: expected a mapping with a 'regions' list")
    return topology


def nodes(topology: dict[str, Any], per_region: int) -> list[dict[str, Any]]:
    gpus = str(topology.get("gpusPerNode", 8))
    prefix = topology.get("nodeNamePrefix")
    if prefix is not None and len(topology["regions"]) != 1:
        sys.exit("nodeNamePrefix names the nodes of a topology of one region only")
    items = []
    for region in topology["regions"]:
        zones = region.get("zones") or [f"{region['name']}-a", f"{region['name']}-b"]
        for index in range(per_region):
            resources = {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": gpus}
            name = f"{prefix or 'gpu-' + region['name']}-{index:04d}"
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            "topology.kubernetes.io/region": region["name"],
                            "topology.kubernetes.io/zone": zones[index % len(zones)],
                            "nvidia.com/gpu.product": region.get(
                                "gpuProduct", "NVIDIA-H100-80GB-HBM3"
                            ),
                            "nvidia.com/gpu.count": gpus,
                        },
                    },
                    "status": {"allocatable": resources, "capacity": resources},
                }
            )
    return items


def regions(topology: dict[str, Any]) -> list[dict[str, Any]]:
    fields = ("prefecture", "displayName", "gpuHourPrice", "carbonIntensity", "location", "links")
    return [
        {
            "apiVersion": "tsunagu.io/v1alpha1",
            "kind": "Region",
            "metadata": {"name": region["name"]},
            "spec": {key: region[key] for key in fields if key in region},
        }
        for region in topology["regions"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["nodes", "regions"])
    parser.add_argument("file")
    parser.add_argument("--nodes-per-region", type=int, default=None)
    args = parser.parse_args()
    topology = load(args.file)
    if args.what == "nodes":
        per_region = args.nodes_per_region or int(topology.get("nodesPerRegion", 4))
        items = nodes(topology, per_region)
    else:
        items = regions(topology)
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)


if __name__ == "__main__":
    main()
