"""The Helm chart, end to end: it lints, renders what was agreed, passes the API server's
validation, installs into a namespace that enforces the restricted Pod Security Standard, and
its RBAC is exactly enough: the operator, run with the chart ServiceAccount's token, schedules a
job, and that token is refused everything the chart does not grant.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import REPO_ROOT, Cluster, OperatorProcess, tool_path
from tests.support.cluster import wait_for_namespace_gone as _wait_for_namespace_gone
from tests.support.scenario import (
    assert_no_gpu_overcommitted,
    dataset,
    free_port,
    japan_regions,
    job_pods,
    node_regions,
    training_job,
    wait_condition,
    wait_ready,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "tsunagu"
VERSIONS = dict(
    line.split("=", 1)
    for line in (REPO_ROOT / "hack" / "versions.env").read_text(encoding="utf-8").splitlines()
    if "=" in line and not line.startswith("#")
)
# `helm template` knows no cluster; tell it the version the test cluster runs.
KUBE_VERSION = VERSIONS["K8S_VERSION"]


def _rules(*rules: tuple[str, str, str]) -> frozenset[tuple[str, str, str]]:
    """(API group, "resource …", "verb …") rows expanded to (group, resource, verb) triples."""
    return frozenset(
        (group, resource, verb)
        for group, resources, verbs in rules
        for resource in resources.split()
        for verb in verbs.split()
    )


# The agreed permissions of `tsunagu run`.
FRAMEWORK_RULES = _rules(
    ("apiextensions.k8s.io", "customresourcedefinitions", "get list watch"),
    ("", "namespaces", "list watch"),
    ("", "events", "create patch"),
    ("events.k8s.io", "events", "create patch"),
)
APPLICATION_RULES = _rules(
    ("tsunagu.io", "trainingjobs", "get list watch patch"),
    ("tsunagu.io", "trainingjobs/status", "get patch update"),
    ("tsunagu.io", "regions datasets", "get list watch"),
    ("tsunagu.io", "regions/status datasets/status", "get patch update"),
    ("", "nodes", "get list watch"),
    ("", "pods", "get list watch create delete patch"),
    ("", "pods/binding", "create"),
    ("", "services", "get list watch create delete"),
)

PROBE_VALUES = {"probes": {"enabled": True, "regions": ["tokyo", "osaka", "fukuoka"]}}


class Helm:
    def __init__(self, path: str) -> None:
        self.path = path

    def run(
        self, *args: str, values: Mapping[str, Any] | None = None, check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Runs helm; `values` are passed as a values file on stdin (`--values -`)."""
        extra = ("--values", "-") if values is not None else ()
        result = subprocess.run(
            [self.path, *args, *extra],
            input=yaml.safe_dump(dict(values)) if values is not None else None,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def template_text(
        self, values: Mapping[str, Any] | None = None, *extra: str, namespace: str = "tsunagu"
    ) -> str:
        return self.run(
            "template", "tsunagu", str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION, *extra, values=values or {},
        ).stdout  # fmt: skip

    def template(
        self, values: Mapping[str, Any] | None = None, *extra: str, namespace: str = "tsunagu"
    ) -> list[dict[str, Any]]:
        text = self.template_text(values, *extra, namespace=namespace)
        return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm(tool_path("helm"))


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str | None = None) -> list[Any]:
    return [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]


def rule_triples(role: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def pod_templates(objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("Deployment", "DaemonSet")
    ]


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
    assert not find(objects, "Role"), "the operator needs cluster-wide roles only"
    for binding in find(objects, "ClusterRoleBinding"):
        assert binding["roleRef"]["name"] == binding["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "tsunagu", "namespace": "tsunagu"}
        ]


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


def test_operator_deployment_is_one_recreated_replica_with_liveness(helm: Helm) -> None:
    (deployment,) = find(helm.template(), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}


def _operator_env(objects: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    (deployment,) = find(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


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
            },
            {"TSUNAGU_PROMETHEUS_URL", "TSUNAGU_DEFAULT_MAX_RTT_MS", "TSUNAGU_LATENCY_QUERY"},
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
            },
            set(),
            id="every-setting",
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
            {"serviceAccount": {"create": False}}, "serviceAccount.name", id="no-account-to-use"
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


# --- against the real API server -------------------------------------------------------------


def test_rendered_chart_passes_server_side_dry_run(
    helm: Helm, cluster: Cluster, namespace: str
) -> None:
    manifest = helm.template_text(PROBE_VALUES, "--include-crds", namespace=namespace)
    result = cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts",
        "--field-manager=chart-dry-run", "-f", "-", input=manifest, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    applied = result.stdout.splitlines()
    for kind in ("deployment.apps/", "clusterrole.rbac", "daemonset.apps/tsunagu-probe-osaka"):
        assert any(line.startswith(kind) for line in applied), (kind, applied)


@dataclass(frozen=True)
class Installation:
    namespace: str
    release: str
    service_account: str


def _labelled_namespace(cluster: Cluster, name: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }
    )


@pytest.fixture(scope="module")
def installed(helm: Helm, cluster: Cluster) -> Iterator[Installation]:
    """The chart installed (helm install --wait) into a namespace enforcing `restricted`."""
    suffix = uuid.uuid4().hex[:6]
    name, release = f"tsunagu-system-{suffix}", f"tsunagu-{suffix}"
    _labelled_namespace(cluster, name)
    result = helm.run(
        "install", release, str(CHART), "--namespace", name, "--kubeconfig", cluster.kubeconfig,
        "--wait", "--timeout", "180s", check=False,
    )  # fmt: skip
    try:
        assert result.returncode == 0, f"helm install failed: {result.stderr}"
        assert "violate" not in result.stderr, f"Pod Security warnings: {result.stderr}"
        yield Installation(namespace=name, release=release, service_account=release)
    finally:
        helm.run(
            "uninstall", release, "--namespace", name, "--kubeconfig", cluster.kubeconfig,
            "--wait", check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
        _wait_for_namespace_gone(cluster, name)


@pytest.fixture(scope="module")
def account_kubeconfig(
    installed: Installation, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A kubeconfig with the chart ServiceAccount's token (TokenRequest) and nothing else."""
    token = cluster.kubectl(
        "create", "token", installed.service_account, "-n", installed.namespace,
        "--duration", "1h",
    ).stdout.strip()  # fmt: skip
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text(encoding="utf-8"))
    context_name = admin["current-context"]
    context = next(c["context"] for c in admin["contexts"] if c["name"] == context_name)
    server = next(c["cluster"] for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test-cluster", "cluster": server}],
        "users": [{"name": "tsunagu-operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "tsunagu-operator",
                "context": {"cluster": "test-cluster", "user": "tsunagu-operator"},
            }
        ],
        "current-context": "tsunagu-operator",
    }
    path = tmp_path_factory.mktemp("account") / "kubeconfig"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_operator_pod_is_admitted_under_restricted_pod_security(
    installed: Installation, cluster: Cluster
) -> None:
    labels = cluster.get_json("namespace", installed.namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = cluster.get_json(
        "pods", "-n", installed.namespace, "-l", "app.kubernetes.io/component=operator"
    )["items"]
    assert [pod["status"]["phase"] for pod in pods] == ["Running"]


def test_non_compliant_pod_is_rejected_in_the_operator_namespace(
    installed: Installation, cluster: Cluster
) -> None:
    """Proves Pod Security admission is active, so the test above means something."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": installed.namespace},
        "spec": {
            "containers": [
                {"name": "root", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        },
    }
    result = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump(pod), check=False
    )
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted' in result.stderr, result.stderr


def _can_i(kubeconfig: str, cluster: Cluster, *args: str) -> str:
    result = subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", kubeconfig, "auth", "can-i", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("request_args", "allowed"),
    [
        pytest.param(("list", "secrets", "-n", "default"), "no", id="list-secrets"),
        pytest.param(("get", "secrets", "-A"), "no", id="get-secrets-anywhere"),
        pytest.param(("get", "configmaps", "-n", "default"), "no", id="read-configmaps"),
        pytest.param(("create", "deployments", "-n", "default"), "no", id="create-deployments"),
        pytest.param(("update", "nodes"), "no", id="change-nodes"),
        pytest.param(("delete", "trainingjobs.tsunagu.io", "-A"), "no", id="delete-jobs"),
        pytest.param(("update", "trainingjobs.tsunagu.io", "-A"), "no", id="rewrite-job-spec"),
        pytest.param(("patch", "regions.tsunagu.io"), "no", id="edit-region-spec"),
        pytest.param(("create", "clusterroles"), "no", id="escalate"),
        pytest.param(("create", "pods", "--subresource=exec", "-A"), "no", id="exec-into-pods"),
        # Positive controls: the token works and carries exactly the chart's grants.
        pytest.param(("create", "pods", "--subresource=binding", "-A"), "yes", id="bind-pods"),
        pytest.param(
            ("patch", "trainingjobs.tsunagu.io", "--subresource=status", "-A"),
            "yes",
            id="write-job-status",
        ),
        pytest.param(("watch", "nodes"), "yes", id="watch-nodes"),
    ],
)
def test_chart_account_may_do_only_what_the_chart_grants(
    account_kubeconfig: str, cluster: Cluster, request_args: tuple[str, ...], allowed: str
) -> None:
    assert _can_i(account_kubeconfig, cluster, *request_args) == allowed


def test_chart_account_is_refused_a_real_secret_listing(
    account_kubeconfig: str, cluster: Cluster
) -> None:
    result = subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", account_kubeconfig, "get", "secrets", "-A"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert 'cannot list resource "secrets"' in result.stderr, result.stderr


def test_operator_schedules_a_job_with_only_the_chart_permissions(
    installed: Installation,
    account_kubeconfig: str,
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
) -> None:
    cluster.apply(japan_regions())
    cluster.apply(dataset(namespace, "claims", "tokyo", "RemoteAccess"))
    cluster.apply(training_job(namespace, "llm-ft", "claims", replicas=2, gpus=8, maxRttMs=20))
    liveness = free_port()
    operator = run_operator(
        "--namespace", namespace,
        "--metrics-port", str(free_port()), "--liveness-port", str(liveness),
        env={"KUBECONFIG": account_kubeconfig},
    )  # fmt: skip
    wait_ready(operator, liveness)

    body = wait_condition(cluster, namespace, "llm-ft", "Scheduled", "True", "Placed", timeout=90)
    region = body["status"]["region"]

    def bound_pods() -> list[dict[str, Any]] | None:
        pods = job_pods(cluster, namespace, "llm-ft")
        return pods if len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods) else None

    pods = wait_until(bound_pods, timeout=60, message="both workers bound to nodes")
    regions = node_regions(cluster)
    assert {regions[pod["spec"]["nodeName"]] for pod in pods} == {region}
    assert_no_gpu_overcommitted(cluster)
    log = operator.output()
    assert "Forbidden" not in log, log[-4000:]
