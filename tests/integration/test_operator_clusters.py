"""Member clusters on the real API server, first slice: a Cluster object whose Secret holds a
kubeconfig is checked and its status says whether the member answers (and its version); a
missing Secret, a bad kubeconfig and an API server that does not answer are each named; a Region
in a member cluster takes no work and says why, whatever the member's state."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.fault_proxy import FaultProxy, upstream_tls
from tests.support.scenario import (
    job_and_its_objects_gone,
    region_nodes,
    training_job,
    wait_condition,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

# The operators of the tests take their Lease, and so read member Secrets, in `default`.
OPERATOR_NAMESPACE = "default"


def secret(name: str, kubeconfig: Any) -> dict[str, Any]:
    text = kubeconfig if isinstance(kubeconfig, str) else yaml.safe_dump(kubeconfig)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        "data": {"kubeconfig": base64.b64encode(text.encode()).decode()},
    }


def member(name: str, secret_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"kubeconfigSecretRef": {"name": secret_name}},
    }


def reachable(cluster: Cluster, name: str) -> dict[str, Any] | None:
    body = cluster.get_json("cluster.tsunagu.io", name)
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Reachable":
            return {**condition, "status_body": body["status"]}
    return None


@pytest.fixture
def names(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A suffix for this test's cluster-scoped objects and Secrets; all removed afterwards."""
    suffix = namespace.removeprefix("t-")
    yield suffix
    cluster.kubectl(
        "delete", "cluster.tsunagu.io,region.tsunagu.io", "-l", f"test={suffix}", "--wait=false",
        check=False,
    )  # fmt: skip
    cluster.kubectl(
        "delete", "secret", "-n", OPERATOR_NAMESPACE, "-l", f"test={suffix}", check=False
    )


def labelled(body: dict[str, Any], suffix: str) -> dict[str, Any]:
    body["metadata"]["labels"] = {"test": suffix}
    return body


def test_a_member_that_answers_is_reachable_with_its_version(
    cluster: Cluster, operator: OperatorProcess, names: str
) -> None:
    # The member is the test cluster itself, reached through its own kubeconfig.
    kubeconfig = Path(cluster.kubeconfig).read_text(encoding="utf-8")
    cluster.apply(labelled(secret(f"member-{names}", kubeconfig), names))
    cluster.apply(labelled(member(f"m-{names}", f"member-{names}"), names))

    condition = wait_until(
        lambda: (c := reachable(cluster, f"m-{names}")) and c["status"] == "True" and c,
        timeout=30,
    )
    assert condition["reason"] == "Connected"
    assert condition["status_body"]["serverVersion"].startswith("v1.34")
    assert "lastContactTime" in condition["status_body"]


@pytest.mark.parametrize(
    ("kubeconfig", "reason"),
    [
        (None, "SecretMissing"),
        ("not: [a kubeconfig", "KubeconfigInvalid"),
        (
            {
                "apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1",
                                                       "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            },
            "ClusterUnreachable",
        ),
    ],
    ids=["no secret", "bad kubeconfig", "nothing listening"],
)  # fmt: skip
def test_a_member_that_cannot_be_used_says_why(
    cluster: Cluster, operator: OperatorProcess, names: str, kubeconfig: Any, reason: str
) -> None:
    if kubeconfig is not None:
        cluster.apply(labelled(secret(f"member-{names}", kubeconfig), names))
    cluster.apply(labelled(member(f"m-{names}", f"member-{names}"), names))

    condition = wait_until(
        lambda: (c := reachable(cluster, f"m-{names}")) and c["reason"] == reason and c,
        timeout=30,
    )
    assert condition["status"] == "False"
    assert condition["message"]


def available(cluster: Cluster, region: str) -> dict[str, Any] | None:
    body = cluster.get_json("region.tsunagu.io", region)
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Available":
            return dict(condition)
    return None


def test_a_region_in_a_member_cluster_takes_no_work_and_its_status_says_why(
    cluster: Cluster, namespace: str, operator: OperatorProcess, names: str
) -> None:
    region = {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": f"far-{names}"},
        "spec": {"prefecture": "JP-40", "clusterRef": {"name": f"m-{names}"}, "gpuHourPrice": 0},
    }
    cluster.apply(labelled(region, names))

    def reason_is(reason: str) -> Any:
        condition = available(cluster, f"far-{names}")
        return condition if condition and condition["reason"] == reason else None

    missing = wait_until(lambda: reason_is("ClusterMissing"), timeout=30)
    assert missing["status"] == "False"
    assert "no Cluster object" in missing["message"]

    kubeconfig = Path(cluster.kubeconfig).read_text(encoding="utf-8")
    cluster.apply(labelled(secret(f"member-{names}", kubeconfig), names))
    cluster.apply(labelled(member(f"m-{names}", f"member-{names}"), names))
    # Connected, but no node of the member carries the region's label.
    empty = wait_until(lambda: reason_is("NoReadyNodes"), timeout=30)
    assert empty["status"] == "False"
    tokyo = available(cluster, "tokyo")
    assert tokyo is not None
    assert (tokyo["status"], tokyo["reason"]) == ("True", "Available")

    # The cheapest region of all, were it taken into account.
    cluster.apply(training_job(namespace, "cheap", None, replicas=1, gpus=1, objective="Cheapest"))
    body = wait_condition(cluster, namespace, "cheap", "Scheduled", "True")
    assert body["status"]["region"] != f"far-{names}"
    verdicts = {a["region"]: a for a in body["status"]["placement"]["alternatives"]}
    assert verdicts[f"far-{names}"]["reason"] == "RegionUnavailable"


def test_a_job_placed_in_a_member_runs_there_and_its_deletion_removes_what_it_made(
    cluster: Cluster, namespace: str, operator: OperatorProcess, names: str
) -> None:
    # The member is the test cluster itself; its region takes the member's hokkaido nodes.
    kubeconfig = Path(cluster.kubeconfig).read_text(encoding="utf-8")
    cluster.apply(labelled(secret(f"member-{names}", kubeconfig), names))
    cluster.apply(labelled(member(f"m-{names}", f"member-{names}"), names))
    region = {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": f"far-{names}"},
        "spec": {
            "prefecture": "JP-01", "clusterRef": {"name": f"m-{names}"}, "gpuHourPrice": 0,
            "nodeSelector": {"topology.kubernetes.io/region": "hokkaido"},
        },
    }  # fmt: skip
    cluster.apply(labelled(region, names))
    wait_until(lambda: (c := available(cluster, f"far-{names}")) and c["status"] == "True",
               timeout=30)  # fmt: skip

    cluster.apply(training_job(namespace, "cheap", None, replicas=2, gpus=1, objective="Cheapest"))
    body = wait_condition(cluster, namespace, "cheap", "Running", "True", timeout=60)
    assert body["status"]["region"] == f"far-{names}"
    assert body["status"]["cluster"] == f"m-{names}"
    assert "tsunagu.io/member-objects" in body["metadata"]["finalizers"]
    scheduled = {c["type"]: c for c in body["status"]["conditions"]}["Scheduled"]
    assert f"(cluster m-{names})" in scheduled["message"]

    anchor = cluster.get_json("configmap", "-n", namespace, "tsunagu-cheap")
    assert anchor["metadata"]["labels"]["tsunagu.io/hub-job-uid"] == body["metadata"]["uid"]
    pods = cluster.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job=cheap")["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["cheap-0", "cheap-1"]
    for pod in pods:
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("ConfigMap", anchor["metadata"]["uid"])
        assert pod["metadata"]["labels"]["tsunagu.io/hub-namespace"] == namespace
        assert pod["spec"]["nodeName"] in region_nodes(cluster, "hokkaido")
    service = cluster.get_json("service", "-n", namespace, "cheap")
    assert service["metadata"]["ownerReferences"][0]["uid"] == anchor["metadata"]["uid"]

    cluster.kubectl("delete", "trainingjob", "-n", namespace, "cheap", "--wait=false")

    wait_until(lambda: job_and_its_objects_gone(cluster, namespace, "cheap"), timeout=60)


def far_region(names: str) -> dict[str, Any]:
    """A region of the member (the test cluster itself) that takes its hokkaido nodes; the
    cheapest of all, so a Cheapest job goes there while it is available."""
    return labelled(
        {
            "apiVersion": "tsunagu.io/v1alpha1",
            "kind": "Region",
            "metadata": {"name": f"far-{names}"},
            "spec": {
                "prefecture": "JP-01", "clusterRef": {"name": f"m-{names}"}, "gpuHourPrice": 0,
                "nodeSelector": {"topology.kubernetes.io/region": "hokkaido"},
            },
        },
        names,
    )  # fmt: skip


def test_a_job_in_a_member_that_stops_answering_is_reported_and_never_started_twice(
    cluster: Cluster, namespace: str, operator: OperatorProcess, names: str
) -> None:
    api = cluster.api_client().configuration
    with FaultProxy(api.host, upstream_tls(api)) as proxy:
        kubeconfig = proxy.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        cluster.apply(labelled(secret(f"member-{names}", kubeconfig.read_text()), names))
        cluster.apply(labelled(member(f"m-{names}", f"member-{names}"), names))
        cluster.apply(far_region(names))
        wait_until(lambda: (c := available(cluster, f"far-{names}")) and c["status"] == "True",
                   timeout=30)  # fmt: skip
        cluster.apply(training_job(namespace, "far", None, replicas=2, gpus=1,
                                   objective="Cheapest"))  # fmt: skip
        body = wait_condition(cluster, namespace, "far", "Running", "True", timeout=60)
        assert body["status"]["cluster"] == f"m-{names}"

        proxy.blackhole(True)
        cut_off = wait_condition(
            cluster, namespace, "far", "ClusterReachable", "False", "ClusterUnreachable",
            timeout=60,
        )  # fmt: skip
        assert f"cluster m-{names}" in condition_of(cut_off, "ClusterReachable")["message"]
        # Still where it was: not requeued, its first copy untouched, no second one anywhere.
        assert cut_off["status"]["region"] == f"far-{names}"
        region = wait_until(
            lambda: (c := available(cluster, f"far-{names}")) and c["status"] == "False" and c,
            timeout=30,
        )
        assert region["reason"] == "ClusterUnreachable"
        # A new job does not go to the unreachable member's region.
        cluster.apply(training_job(namespace, "other", None, replicas=1, gpus=1,
                                   objective="Cheapest"))  # fmt: skip
        other = wait_condition(cluster, namespace, "other", "Scheduled", "True")
        assert other["status"]["region"] != f"far-{names}"
        pods = cluster.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job=far")["items"]
        assert sorted(p["metadata"]["name"] for p in pods) == ["far-0", "far-1"]
        assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ConfigMap" for p in pods)
        assert not [e for e in job_events(cluster, namespace, "far") if e == "Requeued"]

        proxy.blackhole(False)
        back = wait_condition(
            cluster, namespace, "far", "ClusterReachable", "True", "Connected", timeout=60
        )
        assert back["status"]["region"] == f"far-{names}"
        assert condition_of(back, "Running")["status"] == "True"


def condition_of(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def job_events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    events = cluster.get_json(
        "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return [event["reason"] for event in events]
