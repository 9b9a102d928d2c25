"""The pod and Service builders, on plain dicts."""

from __future__ import annotations

from typing import Any

import pytest

from tsunagu.api.types import (
    DatasetAccess,
    DatasetSpec,
    PlacementMode,
    PlacementPolicy,
    Residency,
    ResidencyMode,
    TrainingJobSpec,
)
from tsunagu.controller.builders import build_pod, build_service

JOB_BODY: dict[str, Any] = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "llm-ft", "namespace": "team-a", "uid": "uid-1"},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "trainer"}},
            "spec": {
                "containers": [
                    {
                        "name": "trainer",
                        "image": "trainer:1",
                        "env": [{"name": "RANK", "value": "x"}],
                    },
                    {"name": "sidecar", "image": "sidecar:1"},
                ]
            },
        }
    },
}


def job(mode: PlacementMode = PlacementMode.Bind) -> TrainingJobSpec:
    return TrainingJobSpec(
        namespace="team-a",
        name="llm-ft",
        dataset_ref="claims",
        replicas=4,
        gpus_per_replica=8,
        placement=PlacementPolicy(mode=mode),
    )


def dataset(mode: ResidencyMode, **access: str) -> DatasetSpec:
    return DatasetSpec(
        namespace="team-a",
        name="claims",
        home_region="tokyo",
        residency=Residency(mode=mode, replica_regions=frozenset({"osaka"})),
        access=DatasetAccess(**access),
    )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_pod_is_wired_for_torch_distributed() -> None:
    pod = build_pod(
        job(), JOB_BODY, 2, "fukuoka", dataset(ResidencyMode.RemoteAccess, endpoint="nfs://x")
    )
    trainer = pod["spec"]["containers"][0]
    env = env_of(trainer)
    assert pod["metadata"]["name"] == "llm-ft-2"
    assert env["WORLD_SIZE"] == "4"
    assert env["RANK"] == "2", "the job's own RANK must not override the rank"
    assert env["MASTER_ADDR"] == "llm-ft-0.llm-ft.team-a.svc"
    assert env["MASTER_PORT"] == "29500"
    assert env["TSUNAGU_REGION"] == "fukuoka"
    assert env["TSUNAGU_DATASET_ENDPOINT"] == "nfs://x"
    assert env["TSUNAGU_DATASET_LOCAL"] == "false"
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "resources" not in pod["spec"]["containers"][1], "only the first container gets GPUs"
    assert env_of(pod["spec"]["containers"][1])["RANK"] == "2"
    assert pod["spec"]["hostname"] == "llm-ft-2"
    assert pod["spec"]["subdomain"] == "llm-ft"
    assert pod["metadata"]["labels"] == {
        "app": "trainer",
        "tsunagu.io/job": "llm-ft",
        "tsunagu.io/rank": "2",
        "tsunagu.io/region": "fukuoka",
    }
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("TrainingJob", "uid-1", True)


def test_bind_mode_names_tsunagu_as_scheduler_and_sets_no_affinity() -> None:
    pod = build_pod(job(PlacementMode.Bind), JOB_BODY, 0, "tokyo", None)
    assert pod["spec"]["schedulerName"] == "tsunagu"
    assert "affinity" not in pod["spec"]


def test_bind_mode_with_a_node_creates_the_pod_on_it() -> None:
    pod = build_pod(job(PlacementMode.Bind), JOB_BODY, 0, "tokyo", None, node="tokyo-3")
    assert pod["spec"]["nodeName"] == "tokyo-3"
    assert pod["spec"]["schedulerName"] == "tsunagu"
    unbound = build_pod(job(PlacementMode.Bind), JOB_BODY, 0, "tokyo", None)
    assert "nodeName" not in unbound["spec"]


def test_delegate_mode_never_sets_a_node() -> None:
    pod = build_pod(job(PlacementMode.Delegate), JOB_BODY, 0, "osaka", None, node="osaka-1")
    assert "nodeName" not in pod["spec"]


def test_delegate_mode_requires_the_region_and_keeps_the_default_scheduler() -> None:
    pod = build_pod(job(PlacementMode.Delegate), JOB_BODY, 0, "osaka", None)
    assert "schedulerName" not in pod["spec"]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["osaka"]}
            ]
        }
    ]


@pytest.mark.parametrize(
    ("region", "mounted"),
    [
        pytest.param("tokyo", True, id="home-region-mounts-the-pvc"),
        pytest.param("osaka", True, id="replica-region-mounts-the-pvc"),
        pytest.param("fukuoka", False, id="remote-region-gets-no-pvc"),
    ],
)
def test_dataset_pvc_is_mounted_only_where_the_data_is(region: str, mounted: bool) -> None:
    pod = build_pod(
        job(), JOB_BODY, 0, region, dataset(ResidencyMode.Replicated, pvc_name="claims")
    )
    volumes = [v["name"] for v in pod["spec"].get("volumes", [])]
    assert ("tsunagu-dataset" in volumes) is mounted
    assert (env_of(pod["spec"]["containers"][0]).get("TSUNAGU_DATASET_PATH") == "/data") is mounted


def test_builders_do_not_modify_the_job_body() -> None:
    before = repr(JOB_BODY)
    build_pod(job(), JOB_BODY, 1, "tokyo", dataset(ResidencyMode.Pinned, pvc_name="claims"))
    assert repr(JOB_BODY) == before


def test_headless_service_selects_rank_0_of_the_job() -> None:
    service = build_service(job(), JOB_BODY)
    assert service["metadata"]["name"] == "llm-ft"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"tsunagu.io/job": "llm-ft", "tsunagu.io/rank": "0"}
    rank_0 = build_pod(job(), JOB_BODY, 0, "tokyo", None)
    assert service["spec"]["selector"].items() <= rank_0["metadata"]["labels"].items()
    assert env_of(rank_0["spec"]["containers"][0])["MASTER_ADDR"].startswith(
        f"{rank_0['spec']['hostname']}.{rank_0['spec']['subdomain']}."
    )
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_delegate_mode_uses_the_regions_own_node_selector_when_it_has_one() -> None:
    selector = {"example.com/site": "kyushu-1", "example.com/pool": "gpu"}
    pod = build_pod(job(PlacementMode.Delegate), JOB_BODY, 0, "fukuoka", None, selector)
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "example.com/pool", "operator": "In", "values": ["gpu"]},
        {"key": "example.com/site", "operator": "In", "values": ["kyushu-1"]},
    ]
