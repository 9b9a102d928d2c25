"""What a PodSpec asks of its node: requests as PodRequests counts them, tolerations, node
affinity and host ports, with errors that name the field; and quantities as exact amounts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tsunagu.api.fields import Fields, SpecError
from tsunagu.api.podspec import host_ports, pod_requests, required_node_terms, tolerations
from tsunagu.api.quantity import parse_quantity, resource_amount
from tsunagu.api.scheduling import (
    HostPort,
    NodeSelectorTerm,
    SelectorOperator,
    SelectorRequirement,
    TaintEffect,
    Toleration,
    TolerationOperator,
)

GI = 2**30


def spec(**fields: Any) -> Fields:
    return Fields(fields, "Pod", "team-a/p", "spec")


def container(name: str = "c", requests: Any = None, limits: Any = None, **extra: Any) -> Any:
    resources = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "resources": resources, **extra}


@pytest.mark.parametrize(
    ("value", "resource", "amount"),
    [
        ("8", "cpu", 8000),
        ("500m", "cpu", 500),
        ("0.5", "cpu", 500),
        (".5", "cpu", 500),
        ("1.", "cpu", 1000),
        ("0.5m", "cpu", 1),  # rounded up, as Quantity.MilliValue does
        ("1e3", "cpu", 1_000_000),
        ("1E-3", "cpu", 1),
        ("+2", "cpu", 2000),
        (4, "cpu", 4000),
        (1.5, "cpu", 1500),
        ("1Gi", "memory", GI),
        ("1.5Gi", "memory", 3 * 2**29),
        ("64Mi", "memory", 64 * 2**20),
        ("2Ki", "memory", 2048),
        ("1Ti", "memory", 2**40),
        ("1Pi", "memory", 2**50),
        ("1Ei", "memory", 2**60),
        ("1k", "memory", 1000),
        ("1M", "memory", 10**6),
        ("1G", "memory", 10**9),
        ("1T", "memory", 10**12),
        ("1P", "memory", 10**15),
        ("1E", "memory", 10**18),
        ("1500m", "memory", 2),  # bytes round up
        ("100u", "memory", 1),
        ("100n", "memory", 1),
        ("110", "pods", 110),
        ("8", "nvidia.com/gpu", 8),
        ("2", "hugepages-2Mi", 2),
        ("1e2", "example.com/fpga", 100),
    ],
)
def test_resource_amount(value: object, resource: str, amount: int) -> None:
    assert resource_amount(resource, value) == amount


@pytest.mark.parametrize(
    ("resource", "value", "problem"),
    [
        ("cpu", "-1", "≥ 0"),
        ("cpu", "lots", "not a valid quantity"),
        ("cpu", "1Gb", "not a valid quantity"),
        ("cpu", "1e", "not a valid quantity"),
        ("cpu", True, "must be a quantity"),
        ("cpu", [], "must be a quantity"),
        ("nvidia.com/gpu", "1.5", "whole number of nvidia.com/gpu"),
        ("example.com/fpga", "500m", "whole number"),
    ],
)
def test_bad_quantities(resource: str, value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        resource_amount(resource, value)


def test_parse_quantity_is_exact() -> None:
    assert parse_quantity("0.1") + parse_quantity("0.2") == Decimal("0.3")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {}, id="no-containers"),
        pytest.param(
            {"containers": [container(requests={"cpu": "1"}), container(requests={"cpu": "2"})]},
            {"cpu": 3000},
            id="app-containers-summed",
        ),
        pytest.param(
            {"containers": [container(limits={"cpu": "2", "memory": "1Gi"})]},
            {"cpu": 2000, "memory": GI},
            id="limit-is-the-request",
        ),
        pytest.param(
            {"containers": [container(requests={"cpu": "1"}, limits={"cpu": "2"})]},
            {"cpu": 1000},
            id="request-wins-over-limit",
        ),
        pytest.param(
            {
                "initContainers": [container(requests={"cpu": "4", "memory": "1Gi"})],
                "containers": [container(requests={"cpu": "1", "memory": "2Gi"})],
            },
            {"cpu": 4000, "memory": 2 * GI},
            id="init-container-peak-per-resource",
        ),
        pytest.param(
            {
                "initContainers": [
                    container("a", requests={"cpu": "3"}),
                    container("b", requests={"cpu": "5"}),
                ],
                "containers": [container(requests={"cpu": "1"})],
            },
            {"cpu": 5000},
            id="init-containers-one-at-a-time",
        ),
        pytest.param(
            {
                "initContainers": [
                    container("side", requests={"cpu": "1"}, restartPolicy="Always"),
                    container("setup", requests={"cpu": "3"}),
                ],
                "containers": [container(requests={"cpu": "2"})],
            },
            {"cpu": 4000},
            id="sidecar-runs-beside-later-init-containers",
        ),
        pytest.param(
            {
                "initContainers": [
                    container("setup", requests={"cpu": "3"}),
                    container("side", requests={"cpu": "1"}, restartPolicy="Always"),
                ],
                "containers": [container(requests={"cpu": "1"})],
            },
            {"cpu": 3000},
            id="sidecar-after-init-container",
        ),
        pytest.param(
            {
                "initContainers": [
                    container("side", requests={"cpu": "1"}, restartPolicy="Always"),
                ],
                "containers": [container(requests={"cpu": "2"})],
            },
            {"cpu": 3000},
            id="sidecar-adds-to-app",
        ),
        pytest.param(
            {
                "containers": [container(requests={"cpu": "1"})],
                "overhead": {"cpu": "250m", "memory": "64Mi"},
            },
            {"cpu": 1250, "memory": 64 * 2**20},
            id="overhead-added",
        ),
        pytest.param(
            {
                "containers": [container(requests={"cpu": "1", "nvidia.com/gpu": "1"})],
                "resources": {"requests": {"cpu": "6", "nvidia.com/gpu": "4"}},
            },
            {"cpu": 6000, "nvidia.com/gpu": 1},
            id="pod-level-requests-for-cpu-and-memory-only",
        ),
    ],
)
def test_pod_requests(fields: dict[str, Any], expected: dict[str, int]) -> None:
    assert {k: v for k, v in pod_requests(spec(**fields)).items() if v} == expected


def test_gpu_request_goes_to_the_first_container() -> None:
    fields = spec(
        containers=[
            container("a", requests={"nvidia.com/gpu": "1", "cpu": "1"}),
            container("b", requests={"cpu": "1"}),
        ]
    )
    assert pod_requests(fields, {"nvidia.com/gpu": 4}) == {"nvidia.com/gpu": 4, "cpu": 2000}
    assert pod_requests(spec(), {"nvidia.com/gpu": 4}) == {"nvidia.com/gpu": 4}


def test_bad_request_names_the_field() -> None:
    fields = spec(containers=[container(requests={"cpu": "lots"})])
    with pytest.raises(SpecError) as raised:
        pod_requests(fields)
    assert raised.value.field == "spec.containers[0].resources.requests.cpu"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(
            [{"key": "dedicated", "value": "train", "effect": "NoSchedule"}],
            (Toleration("dedicated", TolerationOperator.Equal, "train", TaintEffect.NoSchedule),),
            id="equal-default",
        ),
        pytest.param(
            [{"operator": "Exists"}],
            (Toleration("", TolerationOperator.Exists),),
            id="wildcard",
        ),
        pytest.param(
            [{"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}],
            (Toleration("gpu", TolerationOperator.Exists, "", TaintEffect.NoExecute),),
            id="exists-noexecute",
        ),
    ],
)
def test_tolerations(entries: list[Any], expected: tuple[Toleration, ...]) -> None:
    assert tolerations(spec(tolerations=entries)) == expected


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([{"value": "x"}], "spec.tolerations[0].operator"),
        ([{"key": "a", "operator": "Exists", "value": "x"}], "spec.tolerations[0].value"),
        ([{"key": "a", "operator": "Gt"}], "spec.tolerations[0].operator"),
        ([{"key": "a", "effect": "Sometimes"}], "spec.tolerations[0].effect"),
    ],
)
def test_bad_tolerations_name_the_field(entries: list[Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        tolerations(spec(tolerations=entries))
    assert raised.value.field == field


def affinity(terms: Any) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def test_required_node_terms() -> None:
    terms = [
        {
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "gen", "operator": "Gt", "values": ["3"]},
            ],
            "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}],
        },
        {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]},
    ]
    assert required_node_terms(spec(affinity=affinity(terms))) == (
        NodeSelectorTerm(
            (
                SelectorRequirement("zone", SelectorOperator.In, ("a", "b")),
                SelectorRequirement("gen", SelectorOperator.Gt, ("3",)),
            ),
            (SelectorRequirement("metadata.name", SelectorOperator.NotIn, ("n1",)),),
        ),
        NodeSelectorTerm((SelectorRequirement("spot", SelectorOperator.DoesNotExist),)),
    )
    assert required_node_terms(spec()) is None
    assert required_node_terms(spec(affinity=affinity([]))) == ()


@pytest.mark.parametrize(
    ("requirement", "field", "problem"),
    [
        ({"key": "z", "operator": "In"}, "values", "must not be empty"),
        ({"key": "z", "operator": "Exists", "values": ["a"]}, "values", "must be empty"),
        ({"key": "z", "operator": "Gt", "values": ["a"]}, "values", "one integer"),
        ({"key": "z", "operator": "Lt", "values": ["1", "2"]}, "values", "one integer"),
        ({"key": "z", "operator": "Near", "values": ["a"]}, "operator", "must be one of"),
        ({"key": "z", "values": ["a"]}, "operator", "is required"),
        ({"operator": "Exists"}, "key", "is required"),
    ],
)
def test_bad_match_expressions_name_the_field(
    requirement: dict[str, Any], field: str, problem: str
) -> None:
    fields = spec(affinity=affinity([{"matchExpressions": [requirement]}]))
    with pytest.raises(SpecError, match=problem) as raised:
        required_node_terms(fields)
    assert raised.value.field == (
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        f".nodeSelectorTerms[0].matchExpressions[0].{field}"
    )


@pytest.mark.parametrize(
    "requirement",
    [
        {"key": "metadata.labels", "operator": "In", "values": ["a"]},
        {"key": "metadata.name", "operator": "Exists"},
        {"key": "metadata.name", "operator": "In", "values": ["a", "b"]},
    ],
)
def test_match_fields_only_name_with_one_value(requirement: dict[str, Any]) -> None:
    fields = spec(affinity=affinity([{"matchFields": [requirement]}]))
    with pytest.raises(SpecError, match=r"matchFields\[0\]"):
        required_node_terms(fields)


def test_host_ports_of_app_containers_and_sidecars() -> None:
    fields = spec(
        initContainers=[
            {"name": "setup", "ports": [{"containerPort": 1, "hostPort": 7000}]},
            {
                "name": "side",
                "restartPolicy": "Always",
                "ports": [{"containerPort": 2, "hostPort": 7001, "protocol": "UDP"}],
            },
        ],
        containers=[
            {
                "name": "main",
                "ports": [
                    {"containerPort": 8080},
                    {"containerPort": 8080, "hostPort": 80, "hostIP": "10.0.0.1"},
                ],
            }
        ],
    )
    assert host_ports(fields) == (HostPort(7001, "UDP"), HostPort(80, "TCP", "10.0.0.1"))


@pytest.mark.parametrize(
    ("port", "field"),
    [
        ({"containerPort": 1, "hostPort": 70000}, "hostPort"),
        ({"containerPort": 1, "hostPort": 80, "protocol": "HTTP"}, "protocol"),
    ],
)
def test_bad_host_ports_name_the_field(port: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        host_ports(spec(containers=[{"name": "c", "ports": [port]}]))
    assert raised.value.field == f"spec.containers[0].ports[0].{field}"
