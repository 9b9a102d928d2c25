"""The Kopf handlers, one module per kind; importing this package registers them. Each handler
records what it observed and hands the consequences to the operator's parts; none decides
anything itself. Pods are the exception: they come through the operator's own watch
(`cluster.podwatch`)."""

from tsunagu.controller.handlers import (
    datasets,
    nodes,
    operator,
    podgroups,
    regions,
    throughputprofiles,
    trainingjobs,
)

__all__ = [
    "datasets", "nodes", "operator", "podgroups", "regions", "throughputprofiles", "trainingjobs",
]  # fmt: skip
