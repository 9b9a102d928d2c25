"""GPU accounting from v1 Node and v1 Pod objects, and Kubernetes quantities."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tsunagu.api.parse import SpecError, parse_node, parse_pod
from tsunagu.api.quantity import parse_device_count, parse_quantity


def node(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "fk-gpu-1",
            "labels": {
                "topology.kubernetes.io/region": "fukuoka",
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8", "cpu": "96"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    obj.update(overrides)
    return obj


def pod(spec: dict[str, Any], phase: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "w-0", "namespace": "team-a"},
        "spec": {"nodeName": "fk-gpu-1", **spec},
        "status": {"phase": phase},
    }


def gpus(requests: Any = None, limits: Any = None, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = {"nvidia.com/gpu": requests}
    if limits is not None:
        resources["limits"] = {"nvidia.com/gpu": limits}
    return {"name": "c", "resources": resources, **extra}


def test_ready_node_counts_toward_its_region() -> None:
    info = parse_node(node())
    assert info.name == "fk-gpu-1"
    assert info.region == "fukuoka"
    assert info.allocatable_gpus == 8
    assert info.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert info.schedulable
    assert ("topology.kubernetes.io/region", "fukuoka") in info.labels


@pytest.mark.parametrize(
    ("overrides", "schedulable"),
    [
        pytest.param({"spec": {"unschedulable": True}}, False, id="cordoned"),
        pytest.param(
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            False,
            id="not-ready",
        ),
        pytest.param(
            {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
            False,
            id="ready-unknown",
        ),
        pytest.param(
            {"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}},
            True,
            id="no-ready-condition",
        ),
        pytest.param({"status": {}}, True, id="no-status"),
    ],
)
def test_node_schedulability(overrides: dict[str, Any], schedulable: bool) -> None:
    assert parse_node(node(**overrides)).schedulable is schedulable


@pytest.mark.parametrize(
    ("allocatable", "expected"),
    [
        pytest.param({"nvidia.com/gpu": 4}, 4, id="integer"),
        pytest.param({"nvidia.com/gpu": "4"}, 4, id="string"),
        pytest.param({"nvidia.com/gpu": "4000m"}, 4, id="milli"),
        pytest.param({"cpu": "8"}, 0, id="no-gpus"),
    ],
)
def test_node_allocatable_gpus(allocatable: dict[str, Any], expected: int) -> None:
    assert parse_node(node(status={"allocatable": allocatable})).allocatable_gpus == expected


def test_node_without_region_label() -> None:
    info = parse_node(node(metadata={"name": "n"}))
    assert info.region is None
    assert info.gpu_product is None


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param(
            node(status={"allocatable": {"nvidia.com/gpu": "1.5"}}),
            "Node fk-gpu-1: status.allocatable.nvidia.com/gpu: "
            "must be a whole number ≥ 0 of devices (got '1.5')",
            id="fractional-gpus",
        ),
        pytest.param(
            node(status={"allocatable": {"nvidia.com/gpu": "lots"}}),
            "Node fk-gpu-1: status.allocatable.nvidia.com/gpu: is not a valid quantity: 'lots'",
            id="not-a-quantity",
        ),
        pytest.param(
            node(metadata={"labels": {}}),
            "Node <unnamed>: metadata.name: is required",
            id="no-name",
        ),
    ],
)
def test_bad_nodes(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_node(obj)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"containers": [gpus(requests=2)]}, 2, id="request"),
        pytest.param({"containers": [gpus(limits="4")]}, 4, id="limit-only"),
        pytest.param({"containers": [gpus(requests=2, limits=2)]}, 2, id="request-and-limit"),
        pytest.param({"containers": [gpus(requests=1), gpus(limits=2)]}, 3, id="sum-of-apps"),
        pytest.param({"containers": [{"name": "c"}]}, 0, id="no-resources"),
        pytest.param(
            {"initContainers": [gpus(requests=8)], "containers": [gpus(requests=2)]},
            8,
            id="init-larger-than-apps",
        ),
        pytest.param(
            {
                "initContainers": [gpus(requests=1), gpus(requests=2)],
                "containers": [gpus(requests=2), gpus(requests=2)],
            },
            4,
            id="apps-larger-than-init",
        ),
        pytest.param(
            {
                "initContainers": [gpus(requests=1, restartPolicy="Always"), gpus(requests=2)],
                "containers": [gpus(requests=1)],
            },
            3,
            id="sidecar-adds-to-later-init",
        ),
        pytest.param(
            {
                "initContainers": [gpus(requests=1, restartPolicy="Always")],
                "containers": [gpus(requests=4)],
            },
            5,
            id="sidecar-adds-to-apps",
        ),
    ],
)
def test_pod_gpu_request(spec: dict[str, Any], expected: int) -> None:
    usage = parse_pod(pod(spec))
    assert usage.gpus == expected
    assert usage.node_name == "fk-gpu-1"
    assert not usage.terminal


@pytest.mark.parametrize(
    ("phase", "terminal"),
    [
        pytest.param("Pending", False, id="pending"),
        pytest.param("Running", False, id="running"),
        pytest.param("Succeeded", True, id="succeeded"),
        pytest.param("Failed", True, id="failed"),
    ],
)
def test_pod_terminal_phases(phase: str, terminal: bool) -> None:
    assert parse_pod(pod({"containers": [gpus(requests=1)]}, phase)).terminal is terminal


def test_unbound_pod() -> None:
    obj = pod({"containers": [gpus(requests=1)]})
    del obj["spec"]["nodeName"]
    assert parse_pod(obj).node_name is None


def test_bad_pod_quantity_names_container_field() -> None:
    with pytest.raises(SpecError) as raised:
        parse_pod(pod({"containers": [{"name": "c"}, gpus(requests="x")]}))
    assert raised.value.name == "team-a/w-0"
    assert raised.value.field == "spec.containers[1].resources.requests.nvidia.com/gpu"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("8", Decimal(8), id="plain"),
        pytest.param("1500m", Decimal("1.5"), id="milli"),
        pytest.param("2k", Decimal(2000), id="kilo"),
        pytest.param("2Ki", Decimal(2048), id="kibi"),
        pytest.param("1e3", Decimal(1000), id="exponent"),
        pytest.param("1E", Decimal(10) ** 18, id="exa"),
        pytest.param(".5", Decimal("0.5"), id="leading-dot"),
        pytest.param(3, Decimal(3), id="int"),
    ],
)
def test_quantities(text: Any, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1.5", id="fraction"),
        pytest.param("-1", id="negative"),
        pytest.param("8 GPUs", id="words"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="none"),
    ],
)
def test_invalid_device_counts(value: Any) -> None:
    with pytest.raises(ValueError, match=r"must be|not a valid"):
        parse_device_count(value)
