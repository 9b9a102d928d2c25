"""The Helm chart as rendered: it lints strictly, grants exactly the agreed RBAC, pins probes to
their regions, meets the restricted Pod Security Standard, and refuses bad values by name."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import yaml

from tests.support.helm import (
    APPLICATION_RULES,
    CHART,
    FRAMEWORK_RULES,
    KUBE_VERSION,
    LEASE_RULES,
    PROBE_VALUES,
    Helm,
    find,
    pod_templates,
    rule_triples,
)

pytestmark = pytest.mark.e2e


# --- rendering (Helm only) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param({**PROBE_VALUES, "serviceMonitor": {"enabled": True}}, id="probes-monitor"),
        pytest.param(
            {"operator": {"watchNamespaces": ["team-a"], "defaultMaxRttMs": 20}},
            id="namespaces-and-budget",
        ),
    ],
)
def test_chart_lints_strictly(helm: Helm, values: dict[str, Any]) -> None:
    result = helm.run(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, values=values, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rbac_is_exactly_the_agreed_rules_split_in_two(helm: Helm) -> None:
    objects = helm.template()
    roles = {role["metadata"]["name"]: role for role in find(objects, "ClusterRole")}
    assert set(roles) == {"tsunagu-framework", "tsunagu-application"}
    assert rule_triples(roles["tsunagu-framework"]) == FRAMEWORK_RULES
    assert rule_triples(roles["tsunagu-application"]) == APPLICATION_RULES
    rendered = json.dumps([roles[name]["rules"] for name in roles])
    assert "*" not in rendered
    (lease_role,) = find(objects, "Role")
    assert lease_role["metadata"] == {**lease_role["metadata"], "namespace": "tsunagu"}
    assert {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in lease_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    } == LEASE_RULES
    (lease_binding,) = find(objects, "RoleBinding")
    assert lease_binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    for binding in find(objects, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "tsunagu", "namespace": "tsunagu"}
        ]


def test_without_creating_profiles_the_learner_may_not_create_them(helm: Helm) -> None:
    objects = helm.template({"operator": {"throughput": {"createProfiles": False}}})
    (role,) = [
        r for r in find(objects, "ClusterRole") if r["metadata"]["name"].endswith("-application")
    ]
    expected = APPLICATION_RULES - {("tsunagu.io", "throughputprofiles", "create")}
    assert rule_triples(role) == expected
    assert ("tsunagu.io", "throughputprofiles/status", "patch") in expected
    env = _operator_env(objects)
    assert env["TSUNAGU_THROUGHPUT_CREATE_PROFILES"] == "false"


@pytest.mark.parametrize(
    ("values", "monitors"),
    [
        pytest.param({}, [], id="disabled"),
        pytest.param({"serviceMonitor": {"enabled": True}}, ["tsunagu"], id="operator"),
        pytest.param(
            {**PROBE_VALUES, "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
            ["tsunagu", "tsunagu-probes"],
            id="operator-and-probes",
        ),
        pytest.param(PROBE_VALUES, [], id="probes-without-monitor"),
    ],
)
def test_service_monitor_is_rendered_only_when_enabled(
    helm: Helm, values: dict[str, Any], monitors: list[str]
) -> None:
    found = find(helm.template(values), "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in found) == monitors
    for monitor in found:
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        if "labels" in values["serviceMonitor"]:
            assert monitor["metadata"]["labels"]["release"] == "kps"


def test_one_probe_daemonset_and_service_per_region_pinned_by_node_affinity(helm: Helm) -> None:
    objects = helm.template(PROBE_VALUES, namespace="net")
    regions = PROBE_VALUES["probes"]["regions"]
    daemonsets = {ds["metadata"]["name"]: ds for ds in find(objects, "DaemonSet")}
    services = {svc["metadata"]["name"] for svc in find(objects, "Service")}
    assert set(daemonsets) == {f"tsunagu-probe-{region}" for region in regions}
    assert services == {"tsunagu-metrics"} | set(daemonsets)
    for region in regions:
        pod = daemonsets[f"tsunagu-probe-{region}"]["spec"]["template"]["spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"] == [
            {
                "matchExpressions": [
                    {"key": "topology.kubernetes.io/region", "operator": "In", "values": [region]}
                ]
            }
        ]
        args = pod["containers"][0]["args"]
        assert args[:3] == ["probe", "--region", region]
        assert args[args.index("--listen") + 1] == "0.0.0.0:7400"
        assert args[args.index("--metrics-listen") + 1] == "0.0.0.0:9400"
        assert args[args.index("--peers-file") + 1] == "/etc/tsunagu/peers.yaml"
        assert pod["automountServiceAccountToken"] is False
    (peers,) = find(objects, "ConfigMap", "tsunagu-probe-peers")
    assert yaml.safe_load(peers["data"]["peers.yaml"]) == {
        region: f"tsunagu-probe-{region}.net.svc:7400" for region in regions
    }


def test_a_peer_address_replaces_that_regions_service_in_the_peers_file(helm: Helm) -> None:
    regions = PROBE_VALUES["probes"]["regions"]
    values = {"probes": {**PROBE_VALUES["probes"], "peerAddresses": {regions[0]: "10.0.0.9:17400"}}}
    (peers,) = find(helm.template(values, namespace="net"), "ConfigMap", "tsunagu-probe-peers")
    assert yaml.safe_load(peers["data"]["peers.yaml"]) == {
        region: "10.0.0.9:17400" if region == regions[0] else f"tsunagu-probe-{region}.net.svc:7400"
        for region in regions
    }


def test_every_pod_meets_the_restricted_standard(helm: Helm) -> None:
    templates = pod_templates(helm.template(PROBE_VALUES))
    assert len(templates) == 1 + len(PROBE_VALUES["probes"]["regions"])
    for name, pod in templates:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def test_operator_deployment_is_two_replicas_rolled_with_a_warm_standby(helm: Helm) -> None:
    objects = helm.template()
    (deployment,) = find(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )
    container = pod["containers"][0]
    assert container["args"] == ["run"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    downward = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert downward == {
        "POD_NAME": "metadata.name",
        "POD_UID": "metadata.uid",
        "POD_NAMESPACE": "metadata.namespace",
    }
    (budget,) = find(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": spec["selector"]}


def test_without_leader_election_one_replica_is_recreated_and_no_lease_is_granted(
    helm: Helm,
) -> None:
    objects = helm.template({"leaderElection": {"enabled": False}, "replicaCount": 1})
    (deployment,) = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(objects, "Role")
    assert not find(objects, "PodDisruptionBudget")
    assert _operator_env(objects)["TSUNAGU_LEADER_ELECT"] == "false"


def _operator_env(objects: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    (deployment,) = find(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


@pytest.mark.parametrize(
    ("operator_values", "expected", "absent"),
    [
        pytest.param(
            {},
            {
                "TSUNAGU_LATENCY_INTERVAL": "10",
                "TSUNAGU_STALENESS_SECONDS": "120",
                "TSUNAGU_LOG_FORMAT": "json",
                "TSUNAGU_METRICS_PORT": "8080",
                "TSUNAGU_LIVENESS_PORT": "8081",
                "TSUNAGU_API_UNREACHABLE_SECONDS": "60",
                "TSUNAGU_LEADER_ELECT": "true",
                "TSUNAGU_LEADER_ELECT_LEASE_DURATION": "15",
                "TSUNAGU_LEADER_ELECT_RENEW_DEADLINE": "10",
                "TSUNAGU_LEADER_ELECT_RETRY_PERIOD": "2",
                "TSUNAGU_LEADER_ELECT_LEASE_NAME": "tsunagu",
                "TSUNAGU_LEADER_ELECT_NAMESPACE": "tsunagu",
                "TSUNAGU_THROUGHPUT_INTERVAL": "60",
                "TSUNAGU_THROUGHPUT_WARMUP_SECONDS": "120",
                "TSUNAGU_THROUGHPUT_NAMESPACE_LABEL": "namespace",
                "TSUNAGU_THROUGHPUT_JOB_LABEL": "job",
                "TSUNAGU_THROUGHPUT_CREATE_PROFILES": "true",
            },
            {
                "TSUNAGU_PROMETHEUS_URL",
                "TSUNAGU_DEFAULT_MAX_RTT_MS",
                "TSUNAGU_LATENCY_QUERY",
                "TSUNAGU_THROUGHPUT_QUERY",
                "TSUNAGU_DEFAULT_PROFILES_NAMESPACE",
            },
            id="defaults-leave-unset-settings-to-the-operator",
        ),
        pytest.param(
            {
                "prometheus": {
                    "url": "http://prometheus.monitoring.svc:9090",
                    "latencyQuery": "max by (source_region, target_region) (rtt)",
                    "intervalSeconds": 5,
                },
                "stalenessSeconds": 60,
                "defaultMaxRttMs": 12.5,
                "defaultMaxThroughputLoss": 0.15,
                "retryIntervalSeconds": 30,
                "logFormat": "plain",
                "declaredFallback": True,
                "nodeLostGraceSeconds": 60,
                "gangTolerations": ["dedicated=gpu:NoSchedule", "nvidia.com/gpu:NoExecute"],
            },
            {
                "TSUNAGU_PROMETHEUS_URL": "http://prometheus.monitoring.svc:9090",
                "TSUNAGU_LATENCY_QUERY": "max by (source_region, target_region) (rtt)",
                "TSUNAGU_LATENCY_INTERVAL": "5",
                "TSUNAGU_STALENESS_SECONDS": "60",
                "TSUNAGU_DEFAULT_MAX_RTT_MS": "12.5",
                "TSUNAGU_DEFAULT_MAX_THROUGHPUT_LOSS": "0.15",
                "TSUNAGU_RETRY_INTERVAL": "30",
                "TSUNAGU_LOG_FORMAT": "plain",
                "TSUNAGU_DECLARED_FALLBACK": "true",
                "TSUNAGU_NODE_LOST_GRACE_SECONDS": "60",
                "TSUNAGU_GANG_TOLERATIONS": "dedicated=gpu:NoSchedule,nvidia.com/gpu:NoExecute",
            },
            set(),
            id="every-setting",
        ),
        pytest.param(
            {
                "throughput": {
                    "intervalSeconds": 0,
                    "query": "sum by (namespace, job) (rate(steps[1m]))",
                    "namespaceLabel": "ns",
                    "jobLabel": "tsunagu_job",
                    "warmupSeconds": 90,
                    "createProfiles": False,
                    "defaultProfilesNamespace": "",
                },
            },
            {
                "TSUNAGU_THROUGHPUT_INTERVAL": "0",
                "TSUNAGU_THROUGHPUT_QUERY": "sum by (namespace, job) (rate(steps[1m]))",
                "TSUNAGU_THROUGHPUT_NAMESPACE_LABEL": "ns",
                "TSUNAGU_THROUGHPUT_JOB_LABEL": "tsunagu_job",
                "TSUNAGU_THROUGHPUT_WARMUP_SECONDS": "90",
                "TSUNAGU_THROUGHPUT_CREATE_PROFILES": "false",
                "TSUNAGU_DEFAULT_PROFILES_NAMESPACE": "",
            },
            set(),
            id="throughput-learning",
        ),
        pytest.param(
            {"defaultMaxThroughputLoss": 0},
            {"TSUNAGU_DEFAULT_MAX_THROUGHPUT_LOSS": "0"},
            set(),
            id="zero-is-a-value-not-unset",
        ),
    ],
)
def test_operator_settings_become_environment_variables(
    helm: Helm, operator_values: dict[str, Any], expected: dict[str, str], absent: set[str]
) -> None:
    env = _operator_env(helm.template({"operator": operator_values}))
    assert {name: env.get(name) for name in expected} == expected
    assert not absent & set(env), absent & set(env)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"operater": {}}, "additional properties 'operater'", id="unknown-top-key"),
        pytest.param({"operator": {"logFormat": "xml"}}, "/operator/logFormat", id="log-format"),
        pytest.param(
            {"operator": {"defaultMaxThroughputLoss": 1.5}},
            "/operator/defaultMaxThroughputLoss",
            id="loss-above-one",
        ),
        pytest.param(
            {"probes": {"enabled": True, "regions": ["Tokyo"]}},
            "/probes/regions/0",
            id="region-not-a-dns-label",
        ),
        pytest.param({"probes": {"enabled": True}}, "probes.regions", id="probes-without-regions"),
        pytest.param(
            {"probes": {"enabled": True, "regions": ["tokyo"], "peerAddresses": {"osaka": "a:1"}}},
            "probes.peerAddresses: osaka is not one of probes.regions",
            id="peer-address-of-no-probe",
        ),
        pytest.param(
            {"probes": {"enabled": True, "regions": ["tokyo"], "peerAddresses": {"tokyo": "a"}}},
            "/probes/peerAddresses/tokyo",
            id="peer-address-without-port",
        ),
        pytest.param(
            {"operator": {"gangTolerations": ["dedicated=gpu"]}},
            "/operator/gangTolerations/0",
            id="toleration-without-effect",
        ),
        pytest.param(
            {"serviceAccount": {"create": False}}, "serviceAccount.name", id="no-account-to-use"
        ),
        pytest.param(
            {"leaderElection": {"enabled": False}}, "replicaCount must be 1", id="two-without-lease"
        ),
        pytest.param(
            {"leaderElection": {"renewDeadlineSeconds": 20}},
            "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
            id="deadline-past-lease",
        ),
        pytest.param({"replicaCount": 0}, "/replicaCount", id="no-replica"),
        pytest.param(
            {"operator": {"throughput": {"intervalSeconds": -1}}},
            "/operator/throughput/intervalSeconds",
            id="negative-throughput-interval",
        ),
        pytest.param(
            {"operator": {"throughput": {"jobLabel": "tsunagu.io/job"}}},
            "/operator/throughput/jobLabel",
            id="job-label-not-a-label-name",
        ),
    ],
)
def test_bad_values_fail_naming_the_field(helm: Helm, values: dict[str, Any], message: str) -> None:
    result = helm.run(
        "template", "tsunagu", str(CHART), "--kube-version", KUBE_VERSION, values=values,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
