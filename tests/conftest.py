"""Fixtures shared by all suites.

Integration and e2e tests get a session-wide real cluster (hack/cluster.sh up: kube-apiserver,
etcd, kube-scheduler, kube-controller-manager and kwok GPU nodes), reused when it is already up,
with the CRDs of crds/ applied. TSUNAGU_KUBECONFIG points the tests at another cluster instead.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import (
    HACK,
    REPO_ROOT,
    Cluster,
    OperatorProcess,
    release_datasets,
)
from tests.support.controlplane import ControlPlane
from tests.support.waiting import wait_until

CRD_NAMES = (
    "regions.tsunagu.io",
    "datasets.tsunagu.io",
    "trainingjobs.tsunagu.io",
    "throughputprofiles.tsunagu.io",
)


def _bring_up_cluster() -> str:
    override = os.environ.get("TSUNAGU_KUBECONFIG")
    if override:
        return override
    result = subprocess.run(
        [str(HACK / "cluster.sh"), "up"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"hack/cluster.sh up failed:\n{result.stderr[-3000:]}", pytrace=False)
    return subprocess.run(
        [str(HACK / "cluster.sh"), "kubeconfig"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _control_plane() -> ControlPlane | None:
    """The kwok cluster's processes, which tests may restart; None for another cluster."""
    if os.environ.get("TSUNAGU_KUBECONFIG"):
        return None
    result = subprocess.run(
        [str(HACK / "cluster.sh"), "workdir"], capture_output=True, text=True, check=False
    )
    return ControlPlane(Path(result.stdout.strip())) if result.returncode == 0 else None


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The real test cluster, with tsunagu's CRDs applied and Established."""
    kube = Cluster(_bring_up_cluster(), _control_plane())
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    kube.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *(f"crd/{name}" for name in CRD_NAMES),
    )  # fmt: skip
    return kube


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace; afterwards its pods are deleted and waited for (so its GPUs are free
    again) and the namespace is deleted."""
    yield from _fresh_namespace(cluster)


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    """A second fresh namespace, cleaned up as `namespace` is."""
    yield from _fresh_namespace(cluster)


def _fresh_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # The operators of the test have stopped by now: what an administrator does after stopping
    # tsunagu, the test does too (the in-use finalizer no longer guards anything).
    release_datasets(cluster, name)
    # What the test held is freed at once (its pods, force-deleted), so the next test finds the
    # GPUs free; the namespace itself goes in the background (its controller takes 5–10 s).
    # The jobs go first, so that no later operator finds them and places them again.
    # One delete-collection request per kind: kubectl's `delete --all` sends one request per
    # object, 40 s for the 200 gangs of a burst test.
    group = "/apis/tsunagu.io/v1alpha1/namespaces"
    for kind in ("trainingjobs", "datasets", "throughputprofiles"):
        cluster.kubectl("delete", "--raw", f"{group}/{name}/{kind}", check=False)
    wait_until(
        lambda: not any(
            cluster.get_json(kind, "-n", name)["items"]
            for kind in ("trainingjobs", "datasets", "throughputprofiles")
        ),
        timeout=60, interval=0.3, message=f"the tsunagu objects of namespace {name} to be gone",
    )  # fmt: skip
    cluster.kubectl(
        "delete", "--raw", f"/api/v1/namespaces/{name}/pods?gracePeriodSeconds=0", check=False
    )
    wait_until(
        lambda: not cluster.get_json("pods", "-n", name)["items"],
        timeout=120, interval=0.3, message=f"the pods of namespace {name} to be gone",
    )  # fmt: skip
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def run_operator(
    cluster: Cluster, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts `tsunagu run` against the cluster; every process started is stopped afterwards.

    The operators of one test share a Lease of their own (in `default`, which every cluster
    has), so each test's first operator leads at once, whatever an earlier test left behind."""
    started: list[OperatorProcess] = []
    lease = {
        "TSUNAGU_LEADER_ELECT_NAMESPACE": "default",
        "TSUNAGU_LEADER_ELECT_LEASE_NAME": f"tsunagu-test-{uuid.uuid4().hex[:10]}",
    }

    def start(*args: str, env: dict[str, str] | None = None) -> OperatorProcess:
        operator = OperatorProcess(cluster, args, {**lease, **(env or {})})
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for operator in started:
            print(
                f"--- operator log ({' '.join(operator.command)}) ---\n{operator.output()[-8000:]}"
            )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
