"""The requirements of a gang pod parsed from a TrainingJob template, what the template may not
say, and the node and pod fields the node rules read (taints, allocatable, requests, ports)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tsunagu.api.parse import SpecError, parse_node, parse_pod, parse_training_job
from tsunagu.api.scheduling import (
    HostPort,
    NodeSelectorTerm,
    SelectorOperator,
    SelectorRequirement,
    Taint,
    TaintEffect,
    Toleration,
    TolerationOperator,
)
from tsunagu.api.types import gpu_only_requirements

GI = 2**30


def training_job(mode: str = "Bind", **pod_spec: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "trainer", "image": "trainer:1"}], **pod_spec}
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "llm", "namespace": "team-a"},
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 4,
            "placement": {"mode": mode},
            "template": {"spec": spec},
        },
    }


def test_requirements_from_the_template() -> None:
    job = training_job(
        containers=[
            {
                "name": "trainer",
                "resources": {"requests": {"cpu": "60", "memory": "256Gi"}},
                "ports": [{"containerPort": 29500, "hostPort": 29500}],
            }
        ],
        initContainers=[{"name": "fetch", "resources": {"requests": {"cpu": "90"}}}],
        overhead={"cpu": "1"},
        tolerations=[{"key": "dedicated", "value": "train", "effect": "NoSchedule"}],
        nodeSelector={"pool": "a100"},
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["3"]}]}
                    ]
                }
            }
        },
    )
    requirements = parse_training_job(job).pod_requirements
    assert requirements.requests == (
        ("cpu", 91_000),
        ("memory", 256 * GI),
        ("nvidia.com/gpu", 4),
    )
    assert requirements.tolerations == (
        Toleration("dedicated", TolerationOperator.Equal, "train", TaintEffect.NoSchedule),
    )
    assert requirements.node_selector == (("pool", "a100"),)
    assert requirements.required_terms == (
        NodeSelectorTerm((SelectorRequirement("gen", SelectorOperator.Gt, ("3",)),)),
    )
    assert requirements.host_ports == (HostPort(29500),)
    assert not requirements.reads_node_name


def test_the_job_gpus_replace_the_first_container_gpus() -> None:
    job = training_job(containers=[{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "1"}}}])
    assert parse_training_job(job).pod_requirements.request("nvidia.com/gpu") == 4


def test_a_job_without_template_requirements_needs_gpus_alone() -> None:
    job = training_job()
    del job["spec"]["template"]
    assert parse_training_job(job).pod_requirements == gpu_only_requirements(4)


def test_match_fields_mark_requirements_that_read_the_node_name() -> None:
    job = training_job(
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n1"]}
                            ]
                        }
                    ]
                }
            }
        }
    )
    assert parse_training_job(job).pod_requirements.reads_node_name


@pytest.mark.parametrize(
    ("mode", "pod_spec", "field"),
    [
        pytest.param("Bind", {"nodeName": "gpu-osaka-0001"}, "nodeName", id="nodename-bind"),
        pytest.param(
            "Delegate", {"nodeName": "gpu-osaka-0001"}, "nodeName", id="nodename-delegate"
        ),
        pytest.param(
            "Bind",
            {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}},
            "affinity.podAffinity",
            id="pod-affinity-bind",
        ),
        pytest.param(
            "Bind",
            {"affinity": {"podAntiAffinity": {}}},
            "affinity.podAntiAffinity",
            id="pod-anti-affinity-bind",
        ),
        pytest.param(
            "Bind",
            {"topologySpreadConstraints": [{"maxSkew": 1}]},
            "topologySpreadConstraints",
            id="topology-spread-bind",
        ),
    ],
)
def test_template_fields_that_are_refused(mode: str, pod_spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_training_job(training_job(mode, **pod_spec))
    assert raised.value.field == f"spec.template.spec.{field}"
    assert str(raised.value).startswith("TrainingJob team-a/llm: spec.template.spec.")


def test_delegate_mode_leaves_pod_affinity_to_the_default_scheduler() -> None:
    job = training_job(
        "Delegate",
        affinity={"podAntiAffinity": {}},
        topologySpreadConstraints=[{"maxSkew": 1}],
    )
    assert parse_training_job(job).replicas == 2


def test_bad_template_request_names_the_field() -> None:
    job = training_job(containers=[{"name": "t", "resources": {"requests": {"memory": "1GB"}}}])
    with pytest.raises(SpecError) as raised:
        parse_training_job(job)
    assert raised.value.field == "spec.template.spec.containers[0].resources.requests.memory"


@pytest.mark.parametrize("replicas", [0, -1])
def test_replicas_must_be_at_least_one(replicas: int) -> None:
    job = training_job()
    job["spec"]["replicas"] = replicas
    with pytest.raises(SpecError, match=r"spec\.replicas: must be an integer ≥ 1"):
        parse_training_job(job)


NODE: dict[str, Any] = {
    "kind": "Node",
    "metadata": {"name": "gpu-1", "labels": {"topology.kubernetes.io/region": "tokyo"}},
    "spec": {
        "unschedulable": True,
        "taints": [
            {"key": "dedicated", "value": "infer", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
        ],
    },
    "status": {
        "allocatable": {"cpu": "95500m", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
        "conditions": [{"type": "Ready", "status": "True"}],
    },
}


def test_node_taints_allocatable_and_cordon() -> None:
    info = parse_node(NODE)
    assert info.taints == (
        Taint("dedicated", "infer", TaintEffect.NoSchedule),
        Taint("node.kubernetes.io/unschedulable", "", TaintEffect.NoSchedule),
    )
    assert info.allocatable == (
        ("cpu", 95_500),
        ("memory", 2**40),
        ("nvidia.com/gpu", 8),
        ("pods", 110),
    )
    assert (info.schedulable, info.unschedulable, info.ready) == (False, True, True)


def test_a_node_listing_gpus_alone_limits_gpus_alone() -> None:
    node = copy.deepcopy(NODE)
    node["status"]["allocatable"] = {"nvidia.com/gpu": "8"}
    assert parse_node(node).allocatable is None


@pytest.mark.parametrize(
    ("taint", "field"),
    [
        ({"key": "a"}, "spec.taints[0].effect"),
        ({"key": "a", "effect": "Sometimes"}, "spec.taints[0].effect"),
        ({"effect": "NoSchedule"}, "spec.taints[0].key"),
    ],
)
def test_bad_taints_name_the_field(taint: dict[str, Any], field: str) -> None:
    node = copy.deepcopy(NODE)
    node["spec"]["taints"] = [taint]
    with pytest.raises(SpecError) as raised:
        parse_node(node)
    assert raised.value.field == field


def test_bad_allocatable_names_the_field() -> None:
    node = copy.deepcopy(NODE)
    node["status"]["allocatable"]["cpu"] = "ninety"
    with pytest.raises(SpecError) as raised:
        parse_node(node)
    assert raised.value.field == "status.allocatable.cpu"


def test_pod_usage_has_every_request_and_its_host_ports() -> None:
    pod = parse_pod(
        {
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "nodeName": "gpu-1",
                "containers": [
                    {
                        "name": "web",
                        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                        "ports": [{"containerPort": 80, "hostPort": 8080}],
                    }
                ],
            },
            "status": {"phase": "Running"},
        }
    )
    assert pod.requests == (("cpu", 2000), ("memory", 4 * GI))
    assert pod.host_ports == (HostPort(8080),)
    assert pod.gpus == 0
