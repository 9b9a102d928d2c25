"""The chart's member mode as rendered: only the hub's identity, its ClusterRole with exactly the
agreed verbs (no Secrets), and the probes of the member's regions; probes of other clusters in
the peers file; bad member values refused by name."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.support.helm import (
    CHART,
    KUBE_VERSION,
    MEMBER_NAMESPACE_CREATE,
    MEMBER_RULES,
    Helm,
    find,
    pod_templates,
    rule_triples,
)

pytestmark = pytest.mark.e2e

MEMBER = {"mode": "member"}
PROBES = {"enabled": True, "regions": ["fukuoka", "kumamoto"]}
MEMBER_PROBES = {"mode": "member", "probes": PROBES}
# The hub's identity and the probes' own account, its role and binding, the peers, and per
# region a Service and a DaemonSet.
PROBE_KINDS = {"ServiceAccount": 2, "ClusterRole": 1, "ClusterRoleBinding": 1, "ConfigMap": 1,
               "Service": 2, "DaemonSet": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        pytest.param(
            MEMBER,
            {"ServiceAccount": 1, "ClusterRole": 1, "ClusterRoleBinding": 1},
            id="identity-only",
        ),
        pytest.param(
            # Hub-only settings change nothing in a member.
            {**MEMBER_PROBES, "clusters": {"kubeconfigSecrets": ["x"]}, "replicaCount": 3},
            PROBE_KINDS,
            id="with-probes",
        ),
        pytest.param(
            {**MEMBER_PROBES, "serviceMonitor": {"enabled": True}},
            {**PROBE_KINDS, "ServiceMonitor": 1},
            id="probes-monitor-only",
        ),
        pytest.param({**MEMBER, "rbac": {"create": False}}, {"ServiceAccount": 1}, id="no-rbac"),
    ],
)
def test_member_mode_renders_only_what_a_member_needs(
    helm: Helm, values: dict[str, Any], kinds: dict[str, int]
) -> None:
    objects = helm.template(values)
    assert Counter(obj["kind"] for obj in objects) == kinds
    for monitor in find(objects, "ServiceMonitor"):
        assert monitor["metadata"]["name"] == "tsunagu-probes"
    for service in find(objects, "Service"):
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == "probe"


def test_member_role_is_exactly_the_agreed_rules_for_the_hub_identity(helm: Helm) -> None:
    objects = helm.template(MEMBER, namespace="tsunagu-member")
    (role,) = find(objects, "ClusterRole")
    assert role["metadata"]["name"] == "tsunagu-member"
    assert rule_triples(role) == MEMBER_RULES
    # Each rule names its resources and verbs: no wildcard, no resourceNames to loosen later.
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
    rendered = json.dumps(objects)
    assert "*" not in json.dumps(role["rules"])
    assert "secrets" not in rendered
    (account,) = find(objects, "ServiceAccount")
    assert account["metadata"] == {**account["metadata"], "name": "tsunagu-hub",
                                   "namespace": "tsunagu-member"}  # fmt: skip
    # The hub holds a token of it; no pod of the member runs as it.
    assert account["automountServiceAccountToken"] is False
    (binding,) = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tsunagu-member",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tsunagu-hub", "namespace": "tsunagu-member"}
    ]


@pytest.mark.parametrize("create", [False, True], ids=["fixed-namespaces", "create-namespaces"])
def test_create_namespaces_grants_namespaces_create_and_nothing_else(
    helm: Helm, create: bool
) -> None:
    (role,) = find(helm.template({**MEMBER, "member": {"createNamespaces": create}}), "ClusterRole")
    expected = MEMBER_RULES | {MEMBER_NAMESPACE_CREATE} if create else MEMBER_RULES
    assert rule_triples(role) == expected


def test_the_hub_identity_can_be_named(helm: Helm) -> None:
    objects = helm.template({**MEMBER, "member": {"serviceAccountName": "hub-tokyo"}})
    (account,) = find(objects, "ServiceAccount")
    (binding,) = find(objects, "ClusterRoleBinding")
    assert account["metadata"]["name"] == "hub-tokyo"
    assert binding["subjects"][0]["name"] == "hub-tokyo"


def test_member_probes_are_the_hubs_probes(helm: Helm) -> None:
    """The same DaemonSets and Services the hub renders for those regions."""
    member = helm.template(MEMBER_PROBES)
    hub = helm.template({"probes": PROBES})
    for kind in ("DaemonSet", "Service"):
        probes = [obj for obj in find(hub, kind) if obj["metadata"]["name"] != "tsunagu-metrics"]
        assert find(member, kind) == probes
    assert find(member, "ConfigMap") == find(hub, "ConfigMap")


def test_member_pods_meet_the_restricted_standard(helm: Helm) -> None:
    templates = pod_templates(helm.template(MEMBER_PROBES))
    assert [name for name, _ in templates] == [
        "DaemonSet/tsunagu-probe-fukuoka",
        "DaemonSet/tsunagu-probe-kumamoto",
    ]
    for name, pod in templates:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name


def test_probes_of_other_clusters_are_measured_from_here_and_run_elsewhere(helm: Helm) -> None:
    values = {
        **MEMBER_PROBES,
        "probes": {
            **PROBES,
            "remoteRegions": {"tokyo": "probe-tokyo.hub.example:7400", "osaka": "10.1.2.3:17400"},
        },
    }
    objects = helm.template(values, namespace="net")
    assert {ds["metadata"]["name"] for ds in find(objects, "DaemonSet")} == {
        "tsunagu-probe-fukuoka",
        "tsunagu-probe-kumamoto",
    }
    (peers,) = find(objects, "ConfigMap", "tsunagu-probe-peers")
    assert yaml.safe_load(peers["data"]["peers.yaml"]) == {
        "fukuoka": "tsunagu-probe-fukuoka.net.svc:7400",
        "kumamoto": "tsunagu-probe-kumamoto.net.svc:7400",
        "tokyo": "probe-tokyo.hub.example:7400",
        "osaka": "10.1.2.3:17400",
    }


def test_probe_services_can_be_reached_from_other_clusters(helm: Helm) -> None:
    annotations = {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}
    values = {
        **MEMBER_PROBES,
        "probes": {
            **PROBES,
            "service": {"type": "LoadBalancer", "annotations": annotations},
        },
    }
    services = find(helm.template(values), "Service")
    assert len(services) == 2
    for service in services:
        assert service["spec"]["type"] == "LoadBalancer"
        assert service["metadata"]["annotations"] == annotations
        assert [port["name"] for port in service["spec"]["ports"]] == ["echo", "metrics"]
    # In the hub as in a member: ClusterIP unless told.
    for service in find(helm.template(MEMBER_PROBES), "Service"):
        assert service["spec"]["type"] == "ClusterIP"
        assert "annotations" not in service["metadata"]


def test_member_mode_lints_strictly(helm: Helm) -> None:
    result = helm.run(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
        values={**MEMBER_PROBES, "member": {"createNamespaces": True}}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"mode": "spoke"}, "/mode", id="unknown-mode"),
        pytest.param({"mode": "Member"}, "value must be one of 'hub', 'member'", id="mode-case"),
        pytest.param(
            {**MEMBER, "member": {"createNamespace": True}},
            "additional properties 'createNamespace'",
            id="member-key-typo",
        ),
        pytest.param(
            {**MEMBER, "member": {"createNamespaces": "yes"}},
            "/member/createNamespaces",
            id="create-namespaces-not-boolean",
        ),
        pytest.param(
            {**MEMBER, "member": {"serviceAccountName": "Hub_Tokyo"}},
            "/member/serviceAccountName",
            id="account-not-a-name",
        ),
        pytest.param(
            {**MEMBER, "probes": {**PROBES, "remoteRegions": {"fukuoka": "a.example:7400"}}},
            "probes.remoteRegions: fukuoka is in probes.regions",
            id="remote-region-runs-here",
        ),
        pytest.param(
            {**MEMBER, "probes": {**PROBES, "remoteRegions": {"tokyo": "a.example"}}},
            "/probes/remoteRegions/tokyo",
            id="remote-region-without-port",
        ),
        pytest.param(
            {**MEMBER, "probes": {**PROBES, "service": {"type": "ExternalName"}}},
            "/probes/service/type",
            id="probe-service-type",
        ),
        pytest.param(
            {**MEMBER, "probes": {"enabled": True}}, "probes.regions", id="probes-without-regions"
        ),
    ],
)
def test_bad_member_values_fail_naming_the_field(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    result = helm.run(
        "template", "tsunagu", str(CHART), "--kube-version", KUBE_VERSION, values=values,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
