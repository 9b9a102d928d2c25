"""Work placed in member clusters, from plain dicts: what the hub sends there (the anchor, pods
and Services owned by it), how a member's nodes and pods are told apart from the hub's, and
that a region takes only the nodes of its own cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.unit import test_placement_fixtures as fixtures
from tsunagu.api.members import qualified_node, split_node
from tsunagu.api.parse import parse_region
from tsunagu.controller.builders import build_anchor, build_pod, build_service, for_member
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.cluster.connection import ClusterConnection, ClusterSet
from tsunagu.controller.cluster.view import ClusterView
from tsunagu.controller.lifecycle.memberobjects import being_deleted
from tsunagu.placement.engine import decide

JOB_BODY: dict[str, Any] = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "llm", "namespace": "team-a", "uid": "hub-uid-1"},
    "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": "t"}]}}},
}


def job() -> Any:
    return replace(fixtures.job("llm", dataset_name=None, replicas=2, gpus=1), namespace="team-a")


def node_body(name: str, region: str) -> dict[str, Any]:
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/region": region}},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "512Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def member_pod(name: str, node: str, anchor: str = "tsunagu-llm", uid: str = "hub-uid-1") -> Any:
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "labels": {
                "tsunagu.io/job": "llm", "tsunagu.io/rank": name[-1],
                "tsunagu.io/region": "fukuoka", "tsunagu.io/hub-namespace": "team-a",
                "tsunagu.io/hub-job": "llm", "tsunagu.io/hub-job-uid": uid,
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": anchor, "uid": "anchor-uid",
                 "controller": True}
            ],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "t", "resources": {"requests": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip


def test_node_names_are_qualified_by_member_and_split_back() -> None:
    assert qualified_node("fukuoka-cloud", "gpu-0001") == "fukuoka-cloud/gpu-0001"
    assert qualified_node(None, "gpu-0001") == "gpu-0001"
    assert split_node("fukuoka-cloud/gpu-0001") == ("fukuoka-cloud", "gpu-0001")
    assert split_node("gpu-0001") == (None, "gpu-0001")


def test_the_anchor_carries_the_hub_job_and_owns_what_goes_to_the_member() -> None:
    anchor = build_anchor(job(), JOB_BODY)
    assert anchor["kind"] == "ConfigMap"
    assert anchor["metadata"]["name"] == "tsunagu-llm"
    assert anchor["metadata"]["namespace"] == "team-a"
    assert anchor["metadata"]["labels"] == {
        "tsunagu.io/job": "llm", "tsunagu.io/hub-namespace": "team-a",
        "tsunagu.io/hub-job": "llm", "tsunagu.io/hub-job-uid": "hub-uid-1",
    }  # fmt: skip

    pod = build_pod(job(), JOB_BODY, 0, "fukuoka", None, node="gpu-0001")
    sent = for_member(pod, JOB_BODY, "anchor-uid")
    assert sent["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "tsunagu-llm", "uid": "anchor-uid",
         "controller": True}
    ]  # fmt: skip
    assert sent["metadata"]["labels"]["tsunagu.io/hub-job-uid"] == "hub-uid-1"
    assert sent["metadata"]["labels"]["tsunagu.io/rank"] == "0"
    assert sent["spec"]["nodeName"] == "gpu-0001"
    # The builder's own output is not changed (it is also what the hub would send).
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"

    service = for_member(build_service(job(), JOB_BODY), JOB_BODY, "anchor-uid")
    assert service["metadata"]["ownerReferences"][0]["uid"] == "anchor-uid"
    assert service["spec"]["selector"] == {"tsunagu.io/job": "llm", "tsunagu.io/rank": "0"}


def test_a_member_view_qualifies_its_nodes_and_knows_the_pods_of_hub_jobs() -> None:
    view = ClusterView(cluster="fukuoka-cloud")
    view.upsert_node(node_body("gpu-0001", "fukuoka"))
    assert list(view.nodes) == ["fukuoka-cloud/gpu-0001"]
    assert view.nodes["fukuoka-cloud/gpu-0001"].cluster == "fukuoka-cloud"

    key, _ = view.upsert_pod(member_pod("llm-0", "gpu-0001"))
    assert key == ("team-a", "llm")
    (pod,) = view.pods_of(("team-a", "llm")).values()
    assert (pod.owner_kind, pod.owner_uid) == ("TrainingJob", "hub-uid-1")
    assert (pod.node_name, pod.cluster, pod.key) == (
        "fukuoka-cloud/gpu-0001", "fukuoka-cloud", "fukuoka-cloud/llm-0",
    )  # fmt: skip
    assert view.pods[("team-a", "llm-0")].node_name == "fukuoka-cloud/gpu-0001"
    assert view.node_alive("fukuoka-cloud/gpu-0001")

    view.delete_node("gpu-0001")
    assert not view.nodes


def test_a_pod_in_a_member_that_our_anchor_does_not_own_is_no_gang_of_ours() -> None:
    view = ClusterView(cluster="fukuoka-cloud")
    key, _ = view.upsert_pod(member_pod("llm-0", "gpu-0001", anchor="someone-else"))
    assert key is None
    assert not view.job_pods
    # It still holds its node's GPU.
    assert view.node_usage()["fukuoka-cloud/gpu-0001"]["nvidia.com/gpu"] == 1


def test_the_pods_of_a_job_are_gathered_over_every_cluster() -> None:
    hub = ClusterConnection("", Kube.__new__(Kube), on_pods_changed=lambda jobs, freed: None)
    member = ClusterConnection("m", Kube.__new__(Kube), on_pods_changed=lambda jobs, freed: None)
    clusters = ClusterSet(hub)
    clusters.members["m"] = member
    member.view.upsert_pod(member_pod("llm-0", "gpu-0001"))
    assert list(clusters.pods_of(("team-a", "llm"))) == ["m/llm-0"]
    assert clusters.get(None) is hub
    assert clusters.get("m") is member
    assert [c.name for c in clusters] == ["", "m"]


def region(name: str, cluster: str | None = None) -> Any:
    spec: dict[str, Any] = {"prefecture": "JP-40"}
    if cluster:
        spec["clusterRef"] = {"name": cluster}
    return parse_region({"kind": "Region", "metadata": {"name": name}, "spec": spec})


def test_a_region_takes_only_the_nodes_of_its_own_cluster() -> None:
    regions = [region("tokyo"), region("fukuoka", "m")]
    hub_view, member_view = ClusterView(), ClusterView(cluster="m")
    # A hub node labelled with the member's region, and a member node with the hub's.
    hub_view.upsert_node(node_body("stray", "fukuoka"))
    hub_view.upsert_node(node_body("t-1", "tokyo"))
    member_view.upsert_node(node_body("f-1", "fukuoka"))
    member_view.upsert_node(node_body("stray", "tokyo"))
    nodes = [*hub_view.nodes.values(), *member_view.nodes.values()]
    snapshot = fixtures.snapshot(regions, nodes)
    assert snapshot.nodes_of("tokyo") == ("t-1",)
    assert snapshot.nodes_of("fukuoka") == ("m/f-1",)

    away = fixtures.job("j", dataset_name=None, replicas=1, gpus=8, excluded=("tokyo",))
    decision = decide(away, snapshot)
    assert decision.region == "fukuoka"
    assert decision.nodes == ("m/f-1",)


def test_a_region_of_a_connected_member_takes_work() -> None:
    catalog = Catalog()
    spec = {"prefecture": "JP-40", "clusterRef": {"name": "m"}}
    catalog.upsert_region({"kind": "Region", "metadata": {"name": "fukuoka"}, "spec": spec})
    catalog.member_verdicts["m"] = ("Connected", "cluster m: API server v1.34.4 answers")
    (served,) = catalog.served_regions()
    assert served.unavailable is None
    catalog.member_verdicts["m"] = ("ClusterUnreachable", "cluster m is not usable")
    (served,) = catalog.served_regions()
    assert served.unavailable == "cluster m is not usable"


def test_a_job_is_held_for_its_member_objects_only_while_deleted_with_the_finalizer() -> None:
    metadata = {"finalizers": ["tsunagu.io/member-objects"]}
    assert not being_deleted({"metadata": metadata})
    deleting = {**metadata, "deletionTimestamp": "2026-12-01T00:00:00Z"}
    assert being_deleted({"metadata": deleting})
    assert not being_deleted({"metadata": {"deletionTimestamp": "2026-12-01T00:00:00Z"}})
