"""The Helm chart, end to end: it lints, renders what was agreed, passes the API server's
validation, installs into a namespace that enforces the restricted Pod Security Standard, and
its RBAC is exactly enough: the operator, run with the chart ServiceAccount's token, schedules a
job, and that token is refused everything the chart does not grant.
"""

from __future__ import annotations

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
from tests.support.helm import CHART, PROBE_VALUES, Helm
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
    assert [pod["status"]["phase"] for pod in pods] == ["Running", "Running"]  # leader, standby


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


def test_chart_account_may_hold_only_its_own_lease(
    installed: Installation, account_kubeconfig: str, cluster: Cluster
) -> None:
    own = ("-n", installed.namespace)
    lease = f"leases.coordination.k8s.io/{installed.release}"
    assert _can_i(account_kubeconfig, cluster, "get", lease, *own) == "yes"
    assert _can_i(account_kubeconfig, cluster, "update", lease, *own) == "yes"
    assert (
        _can_i(account_kubeconfig, cluster, "create", "leases.coordination.k8s.io", *own) == "yes"
    )
    other = "leases.coordination.k8s.io/kube-scheduler"
    assert _can_i(account_kubeconfig, cluster, "update", other, *own) == "no"
    assert _can_i(account_kubeconfig, cluster, "update", other, "-n", "kube-system") == "no"
    assert _can_i(account_kubeconfig, cluster, "delete", lease, *own) == "no"


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
        # The chart's own Lease: a local run beside the installed replicas is one candidate
        # more. Their pods are simulated (no process runs), so nobody holds the Lease and this
        # one takes it; its RBAC is exactly what the replicas would have.
        env={
            "KUBECONFIG": account_kubeconfig,
            "TSUNAGU_LEADER_ELECT_NAMESPACE": installed.namespace,
            "TSUNAGU_LEADER_ELECT_LEASE_NAME": installed.release,
        },
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
