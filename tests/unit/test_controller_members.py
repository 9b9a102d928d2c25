"""Member clusters, first slice: the Cluster kind read from plain dicts, a Region's clusterRef,
and what the engine is told of a region in a member cluster (it takes no work, and says why)."""

from __future__ import annotations

import pytest

from tests.unit import test_placement_fixtures as fixtures
from tsunagu.api.fields import SpecError
from tsunagu.api.parse import parse_cluster, parse_region
from tsunagu.api.types import ClusterSpec
from tsunagu.controller.catalog import Catalog
from tsunagu.controller.lifecycle.members import MemberState, cluster_status
from tsunagu.placement.engine import decide


def region_body(name: str, cluster: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"prefecture": "JP-40"}
    if cluster is not None:
        spec["clusterRef"] = {"name": cluster}
    return {"kind": "Region", "metadata": {"name": name}, "spec": spec}


def test_a_cluster_names_its_kubeconfig_secret() -> None:
    spec = parse_cluster(
        {"metadata": {"name": "fukuoka-cloud"}, "spec": {"kubeconfigSecretRef": {"name": "kc"}}}
    )
    assert spec == ClusterSpec("fukuoka-cloud", "kc", "kubeconfig", False)


def test_a_cluster_without_a_secret_name_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"spec\.kubeconfigSecretRef\.name"):
        parse_cluster({"metadata": {"name": "c"}, "spec": {"kubeconfigSecretRef": {}}})


def test_a_region_names_its_member_cluster() -> None:
    assert parse_region(region_body("fukuoka", "fukuoka-cloud")).cluster == "fukuoka-cloud"
    assert parse_region(region_body("tokyo")).cluster is None


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ({}, "cluster fukuoka-cloud: no Cluster object of that name"),
        (
            {"fukuoka-cloud": ("ClusterUnreachable", "cluster fukuoka-cloud is not usable")},
            "cluster fukuoka-cloud is not usable",
        ),
    ],
    ids=["no Cluster", "unreachable"],
)
def test_a_region_in_a_member_cluster_takes_no_work_and_says_why(
    verdicts: dict[str, tuple[str, str]], expected: str
) -> None:
    catalog = Catalog()
    catalog.upsert_region(region_body("fukuoka", "fukuoka-cloud"))
    catalog.upsert_region(region_body("tokyo"))
    catalog.member_verdicts.update(verdicts)
    served = {region.name: region for region in catalog.served_regions()}
    assert served["fukuoka"].unavailable == expected
    assert served["tokyo"].unavailable is None

    nodes = [fixtures.node(f"{r}-0", r, 8) for r in ("fukuoka", "tokyo")]
    snapshot = fixtures.snapshot(catalog.served_regions(), nodes)
    decision = decide(fixtures.job("j", dataset_name=None, replicas=1, gpus=1), snapshot)
    assert decision.region == "tokyo"
    rejected = {c.region: c for c in decision.candidates if not c.feasible}
    assert rejected["fukuoka"].reason == "RegionUnavailable"
    assert rejected["fukuoka"].message == expected


def test_the_cluster_status_says_whether_the_member_answers() -> None:
    state = MemberState(
        spec=None, generation=3, reason="Connected", message="answers", version="v1.34.4",
        last_contact=0.0,
    )  # fmt: skip
    status = cluster_status(state, 0.0)
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Reachable", "True", "Connected",
    )  # fmt: skip
    assert status["serverVersion"] == "v1.34.4"
    assert status["observedGeneration"] == 3
    state.reason = "ClusterUnreachable"
    assert cluster_status(state, 0.0)["conditions"][0]["status"] == "False"
