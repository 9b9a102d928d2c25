"""The chart's member mode against a real API server: the test cluster stands for a member.
`helm install --set mode=member` into a namespace enforcing the restricted Pod Security Standard,
hack/member-kubeconfig.sh makes the hub's kubeconfig, and with that identity every step the hub
takes in a member works (a gang's anchor, pods bound at creation and by pods/binding, its
Service and Events), while everything outside the member role is refused with 403."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.cluster import wait_for_namespace_gone as _wait_for_namespace_gone
from tests.support.helm import MEMBER_RULES, Helm, rule_triples
from tests.support.member import (
    MEMBER_SCRIPT,
    MemberInstall,
    install_member,
    member_kubeconfig,
    write_member_kubeconfig,
)
from tests.support.scenario import (
    free_port,
    japan_regions,
    job_and_its_objects_gone,
    node_regions,
    region_nodes,
    training_job,
    wait_condition,
    wait_ready,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

PROBE_REGION = "fukuoka"


@pytest.fixture(scope="module")
def member(helm: Helm, cluster: Cluster) -> Iterator[MemberInstall]:
    """The member mode installed (helm --wait) with the probe of one region, into a namespace
    that enforces `restricted`; namespaces create not granted."""
    suffix = uuid.uuid4().hex[:6]
    namespace, release = f"tsunagu-member-{suffix}", f"hub-{suffix}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        }
    )
    try:
        yield install_member(
            helm, cluster, namespace, release,
            values={"probes": {"enabled": True, "regions": [PROBE_REGION]}},
        )  # fmt: skip
    finally:
        helm.run(
            "uninstall", release, "--namespace", namespace, "--kubeconfig", cluster.kubeconfig,
            "--wait", check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        _wait_for_namespace_gone(cluster, namespace)


@pytest.fixture(scope="module")
def hub_kubeconfig(
    member: MemberInstall, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> str:
    output = tmp_path_factory.mktemp("member") / "fukuoka-cloud.kubeconfig"
    write_member_kubeconfig(cluster, member, output, name="fukuoka-cloud")
    return str(output)


@dataclass(frozen=True)
class Hub:
    """The Kubernetes API as the hub's identity in the member sees it."""

    core: Any
    apps: Any
    rbac: Any
    kubeconfig: str


@pytest.fixture(scope="module")
def hub(hub_kubeconfig: str) -> Hub:
    from kubernetes import client

    api = Cluster(hub_kubeconfig).api_client()
    return Hub(
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        rbac=client.RbacAuthorizationV1Api(api),
        kubeconfig=hub_kubeconfig,
    )


def test_member_install_holds_only_the_identity_its_role_and_the_probes(
    helm: Helm, cluster: Cluster, member: MemberInstall
) -> None:
    manifest = helm.run(
        "get", "manifest", member.release, "--namespace", member.namespace,
        "--kubeconfig", cluster.kubeconfig,
    ).stdout  # fmt: skip
    kinds = sorted(
        f"{doc['kind']}/{doc['metadata']['name']}" for doc in yaml.safe_load_all(manifest) if doc
    )
    name = member.release
    assert kinds == sorted(
        [
            f"ClusterRole/{name}-tsunagu-member",
            f"ClusterRoleBinding/{name}-tsunagu-member",
            f"ConfigMap/{name}-tsunagu-probe-peers",
            f"DaemonSet/{name}-tsunagu-probe-{PROBE_REGION}",
            f"Service/{name}-tsunagu-probe-{PROBE_REGION}",
            f"ServiceAccount/{name}",
            f"ServiceAccount/{name}-tsunagu-probe",
        ]
    )
    role = cluster.get_json("clusterrole", f"{name}-tsunagu-member")
    assert rule_triples(role) == MEMBER_RULES
    # The probe runs on the region's nodes, and only there, admitted under `restricted`.
    pods = cluster.get_json("pods", "-n", member.namespace)["items"]
    regions = node_regions(cluster)
    on = [pod["spec"]["nodeName"] for pod in pods]
    assert sorted(on) == sorted(node for node, region in regions.items() if region == PROBE_REGION)
    assert on


def test_member_mode_with_probes_for_other_clusters_passes_server_side_dry_run(
    helm: Helm, cluster: Cluster, namespace: str
) -> None:
    values = {
        "mode": "member",
        "member": {"createNamespaces": True},
        "probes": {
            "enabled": True,
            "regions": [PROBE_REGION],
            "remoteRegions": {"tokyo": "probe-tokyo.hub.example:7400"},
            "service": {"type": "NodePort", "annotations": {"example.com/exposed": "wan"}},
        },
    }
    manifest = helm.template_text(values, namespace=namespace)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--field-manager=member-dry-run",
        "-f", "-", input=manifest, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    applied = sorted(line.split(" ")[0] for line in result.stdout.splitlines())
    assert applied == sorted(
        [
            "clusterrole.rbac.authorization.k8s.io/tsunagu-member",
            "clusterrolebinding.rbac.authorization.k8s.io/tsunagu-member",
            "configmap/tsunagu-probe-peers",
            f"daemonset.apps/tsunagu-probe-{PROBE_REGION}",
            f"service/tsunagu-probe-{PROBE_REGION}",
            "serviceaccount/tsunagu-hub",
            "serviceaccount/tsunagu-probe",
        ]
    )


def _forbidden(call: Callable[[], object]) -> str:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403, refused.value
    return str(json.loads(refused.value.body)["message"])


def test_the_hub_places_a_gang_in_the_member_with_only_the_member_role(
    hub: Hub, cluster: Cluster, namespace: str
) -> None:
    """Every step the hub takes for a gang in a member, performed as the hub's identity."""
    from kubernetes import client, watch

    core = hub.core
    # Capacity: the member's nodes, listed and watched (a watch is what the hub keeps open).
    nodes = core.list_node(label_selector=f"topology.kubernetes.io/region={PROBE_REGION}")
    node = nodes.items[0].metadata.name
    assert core.read_node(node).metadata.name == node
    assert next(iter(watch.Watch().stream(core.list_node, timeout_seconds=2)))["type"] == "ADDED"
    # The job's namespace exists (the hub checks before making anything).
    assert core.read_namespace(namespace).metadata.name == namespace

    # The anchor owns everything of the gang; the hub finds its anchors by label.
    hub_labels = {"tsunagu.io/hub-namespace": "team-a", "tsunagu.io/hub-job": "llm",
                  "tsunagu.io/hub-job-uid": str(uuid.uuid4()), "tsunagu.io/job": "llm"}  # fmt: skip
    anchor = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "tsunagu-llm", "labels": hub_labels}}
    )
    selector = f"tsunagu.io/hub-job-uid={hub_labels['tsunagu.io/hub-job-uid']}"
    found = core.list_config_map_for_all_namespaces(label_selector=selector).items
    assert [cm.metadata.name for cm in found] == ["tsunagu-llm"]
    events = watch.Watch().stream(
        core.list_config_map_for_all_namespaces, label_selector=selector, timeout_seconds=2
    )
    assert next(iter(events))["object"].metadata.name == "tsunagu-llm"
    owner = {
        "apiVersion": "v1", "kind": "ConfigMap", "name": "tsunagu-llm",
        "uid": anchor.metadata.uid, "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip

    def pod(rank: int, **spec: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": f"llm-{rank}", "ownerReferences": [owner],
                         "labels": {**hub_labels, "tsunagu.io/rank": str(rank)}},
            "spec": {"schedulerName": "tsunagu", "containers": [{"name": "w", "image": "t"}],
                     "tolerations": [{"operator": "Exists"}], **spec},
        }  # fmt: skip

    # Rank 0 bound at creation (Bind mode); rank 1 created unbound and bound by pods/binding.
    core.create_namespaced_pod(namespace, pod(0, nodeName=node))
    core.create_namespaced_pod(namespace, pod(1))
    binding = client.V1Binding(
        metadata=client.V1ObjectMeta(name="llm-1"),
        target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
    )
    # The client cannot read the Status a binding answers with; the bind itself is checked below.
    core.create_namespaced_pod_binding("llm-1", namespace, binding, _preload_content=False)
    assert {
        p.metadata.name: p.spec.node_name for p in core.list_namespaced_pod(namespace).items
    } == {
        "llm-0": node,
        "llm-1": node,
    }
    everywhere = core.list_pod_for_all_namespaces(label_selector=selector).items
    assert sorted(p.metadata.name for p in everywhere) == ["llm-0", "llm-1"]

    # The headless Service, and the Events a scheduler posts (patch: a repeated one's count).
    core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "llm", "ownerReferences": [owner]},
         "spec": {"clusterIP": "None", "selector": {"tsunagu.io/job": "llm"}}},
    )  # fmt: skip
    assert core.read_namespaced_service("llm", namespace).spec.cluster_ip == "None"
    event = core.create_namespaced_event(
        namespace,
        {"metadata": {"generateName": "llm-0."}, "reason": "Scheduled", "type": "Normal",
         "message": "placed by the hub", "count": 1,
         "involvedObject": {"kind": "Pod", "name": "llm-0", "namespace": namespace}},
    )  # fmt: skip
    core.patch_namespaced_event(event.metadata.name, namespace, {"count": 2})

    # Taking the gang down: pods, Service and anchor deleted by the hub.
    for rank in (0, 1):
        core.delete_namespaced_pod(f"llm-{rank}", namespace, grace_period_seconds=0)
    core.delete_namespaced_service("llm", namespace)
    core.delete_namespaced_config_map("tsunagu-llm", namespace)
    assert not core.list_namespaced_config_map(namespace, label_selector=selector).items


def _deployment() -> dict[str, Any]:
    labels = {"app": "x"}
    return {
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [{"name": "x", "image": "x"}]}}},
    }  # fmt: skip


DENIED: dict[str, Callable[[Hub, str, str], object]] = {
    "get-secret": lambda hub, ns, node: hub.core.read_namespaced_secret("any", ns),
    "list-secrets-anywhere": lambda hub, ns, node: hub.core.list_secret_for_all_namespaces(),
    "create-secret": lambda hub, ns, node: hub.core.create_namespaced_secret(
        ns, {"metadata": {"name": "x"}}
    ),
    "delete-node": lambda hub, ns, node: hub.core.delete_node(node),
    "label-node": lambda hub, ns, node: hub.core.patch_node(
        node, {"metadata": {"labels": {"x": "y"}}}
    ),
    "create-deployment": lambda hub, ns, node: hub.apps.create_namespaced_deployment(
        ns, _deployment()
    ),
    "create-namespace": lambda hub, ns, node: hub.core.create_namespace(
        {"metadata": {"name": f"t-{uuid.uuid4().hex[:10]}"}}
    ),
    "delete-namespace": lambda hub, ns, node: hub.core.delete_namespace(ns),
    "patch-pod": lambda hub, ns, node: hub.core.patch_namespaced_pod(
        "any", ns, {"metadata": {"labels": {"x": "y"}}}
    ),
    "evict-pod": lambda hub, ns, node: hub.core.create_namespaced_pod_eviction(
        "any", ns, {"metadata": {"name": "any", "namespace": ns}}
    ),
    "list-services": lambda hub, ns, node: hub.core.list_namespaced_service(ns),
    "update-configmap": lambda hub, ns, node: hub.core.patch_namespaced_config_map(
        "any", ns, {"data": {"x": "y"}}
    ),
    "read-service-accounts": lambda hub, ns, node: hub.core.list_namespaced_service_account(ns),
    "escalate": lambda hub, ns, node: hub.rbac.create_cluster_role(
        {"metadata": {"name": f"t-{uuid.uuid4().hex[:10]}"}, "rules": []}
    ),
}


@pytest.mark.parametrize("name", sorted(DENIED))
def test_a_verb_outside_the_member_role_is_refused_with_403(
    hub: Hub, member: MemberInstall, namespace: str, name: str
) -> None:
    node = hub.core.list_node(limit=1).items[0].metadata.name
    message = _forbidden(lambda: DENIED[name](hub, namespace, node))
    assert f"system:serviceaccount:{member.namespace}:{member.service_account}" in message


def test_the_member_role_creates_namespaces_only_when_the_chart_allows(cluster: Cluster) -> None:
    """member_kubeconfig() (the helper of the multi-cluster tests) grants namespaces create: the
    hub may make a gang's namespace, and still nothing more."""
    from kubernetes import client

    core = client.CoreV1Api(Cluster(member_kubeconfig(cluster)).api_client())
    name = f"t-{uuid.uuid4().hex[:10]}"
    try:
        core.create_namespace({"metadata": {"name": name}})
        assert core.read_namespace(name).status.phase == "Active"
        message = _forbidden(lambda: core.delete_namespace(name))
        assert "cannot delete resource" in message
        _forbidden(lambda: core.list_secret_for_all_namespaces())
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    # Once per process: the second ask is the same file.
    assert member_kubeconfig(cluster) == member_kubeconfig(cluster)


def test_the_kubeconfig_script_refuses_an_account_the_chart_did_not_make(
    cluster: Cluster, member: MemberInstall, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(MEMBER_SCRIPT), "--kubeconfig", cluster.kubeconfig, "--namespace", member.namespace,
         "--service-account", "nobody", "--output", str(tmp_path / "kubeconfig")],
        capture_output=True, text=True, timeout=60, check=False,
        env={**cluster.env(), "KUBECTL": cluster.kubectl_path},
    )  # fmt: skip
    assert result.returncode != 0
    assert f"no ServiceAccount {member.namespace}/nobody" in result.stderr, result.stderr
    assert not (tmp_path / "kubeconfig").exists()


def test_the_hub_kubeconfig_holds_only_a_token_and_is_private(hub_kubeconfig: str) -> None:
    config = yaml.safe_load(Path(hub_kubeconfig).read_text(encoding="utf-8"))
    (user,) = config["users"]
    assert set(user["user"]) == {"token"}
    (entry,) = config["clusters"]
    assert entry["cluster"]["certificate-authority-data"]
    assert config["current-context"] == "fukuoka-cloud"
    assert Path(hub_kubeconfig).stat().st_mode & 0o077 == 0


def test_the_hub_runs_a_job_in_the_member_with_only_the_member_role(
    cluster: Cluster,
    hub_kubeconfig: str,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
) -> None:
    """Issue 17's proof of least privilege: the handoff as documented (the script's kubeconfig in
    a Secret of the operator's namespace, `default` for the tests' Lease; a Cluster naming it),
    and the hub places a job in the member's region, sees it run and removes what it made when
    the job is deleted, acting in the member as the member identity only. The member is the
    test cluster itself; its region takes the hokkaido nodes."""
    suffix = namespace.removeprefix("t-")
    secret_name, member_name, region = f"member-{suffix}", f"m-{suffix}", f"far-{suffix}"
    text = Path(hub_kubeconfig).read_text(encoding="utf-8")
    cluster.apply(japan_regions())
    cluster.apply(
        [
            {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": "default"},
                "data": {"kubeconfig": base64.b64encode(text.encode()).decode()},
            },
            {
                "apiVersion": "tsunagu.io/v1alpha1", "kind": "Cluster",
                "metadata": {"name": member_name},
                "spec": {"kubeconfigSecretRef": {"name": secret_name}},
            },
            {
                "apiVersion": "tsunagu.io/v1alpha1", "kind": "Region",
                "metadata": {"name": region},
                "spec": {
                    "prefecture": "JP-01", "clusterRef": {"name": member_name}, "gpuHourPrice": 0,
                    "nodeSelector": {"topology.kubernetes.io/region": "hokkaido"},
                },
            },
        ]
    )  # fmt: skip
    try:
        port = free_port()
        operator = run_operator(
            "--liveness-port", str(port), "--metrics-port", "0", "--retry-interval", "2"
        )
        wait_ready(operator, port)
        reachable = wait_until(
            lambda: _condition(cluster, "cluster.tsunagu.io", member_name, "Reachable", "True"),
            timeout=60, message=f"Cluster {member_name} reachable",
        )  # fmt: skip
        assert reachable["reason"] == "Connected"
        wait_until(
            lambda: _condition(cluster, "region.tsunagu.io", region, "Available", "True"),
            timeout=60, message=f"Region {region} available",
        )  # fmt: skip

        cluster.apply(training_job(namespace, "cheap", None, replicas=2, gpus=1,
                                   objective="Cheapest"))  # fmt: skip
        body = wait_condition(cluster, namespace, "cheap", "Running", "True", timeout=90)
        assert (body["status"]["region"], body["status"]["cluster"]) == (region, member_name)
        pods = cluster.get_json("pods", "-n", namespace, "-l", "tsunagu.io/job=cheap")["items"]
        assert sorted(p["metadata"]["name"] for p in pods) == ["cheap-0", "cheap-1"]
        assert {p["spec"]["nodeName"] for p in pods} <= set(region_nodes(cluster, "hokkaido"))

        cluster.kubectl("delete", "trainingjob", "-n", namespace, "cheap", "--wait=false")

        wait_until(
            lambda: job_and_its_objects_gone(cluster, namespace, "cheap"),
            timeout=60,
            message="the job and everything it made in the member gone",
        )
        log = operator.output()
        assert "Forbidden" not in log, log[-4000:]
        assert " 403" not in log, log[-4000:]
    finally:
        cluster.kubectl("delete", "region.tsunagu.io", region, "--wait=false", check=False)
        cluster.kubectl("delete", "cluster.tsunagu.io", member_name, "--wait=false", check=False)
        cluster.kubectl("delete", "secret", secret_name, "-n", "default", check=False)


def _condition(
    cluster: Cluster, kind: str, name: str, type_: str, status: str
) -> dict[str, Any] | None:
    body = cluster.get_json(kind, name)
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_ and condition["status"] == status:
            return dict(condition)
    return None
