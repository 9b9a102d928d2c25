"""A test cluster standing for a member: the chart's member mode installed into it (real Helm),
and a kubeconfig of the hub's identity there made by hack/member-kubeconfig.sh, so that a hub
under test acts in the member with exactly the member role and nothing more.

`member_kubeconfig(cluster)` is the short way: it installs the member chart once per cluster and
test process and returns the path of the restricted kubeconfig."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.cluster import HACK, Cluster, tool_path
from tests.support.helm import CHART, Helm

MEMBER_SCRIPT = HACK / "member-kubeconfig.sh"
# Where member_kubeconfig() installs: one namespace, a release per createNamespaces setting.
SHARED_NAMESPACE = "tsunagu-member"


@dataclass(frozen=True)
class MemberInstall:
    """A member-mode release: the hub's ServiceAccount is `service_account` in `namespace`."""

    namespace: str
    release: str
    service_account: str


def install_member(
    helm: Helm,
    cluster: Cluster,
    namespace: str,
    release: str,
    *,
    create_namespaces: bool = False,
    values: Mapping[str, Any] | None = None,
) -> MemberInstall:
    """`helm upgrade --install` of the member mode (no CRDs: a member needs none), waited for.
    The hub's ServiceAccount is named after the release."""
    chart_values = {
        **dict(values or {}),
        "mode": "member",
        "member": {"serviceAccountName": release, "createNamespaces": create_namespaces},
    }
    helm.run(
        "upgrade", "--install", release, str(CHART), "--namespace", namespace,
        "--create-namespace", "--skip-crds", "--kubeconfig", cluster.kubeconfig,
        "--wait", "--timeout", "180s", values=chart_values,
    )  # fmt: skip
    return MemberInstall(namespace=namespace, release=release, service_account=release)


def write_member_kubeconfig(
    cluster: Cluster,
    install: MemberInstall,
    output: Path,
    *,
    name: str = "member",
    server: str | None = None,
    duration: str = "2h",
) -> subprocess.CompletedProcess[str]:
    """Runs hack/member-kubeconfig.sh with the cluster's admin kubeconfig; `server` replaces the
    API server's address (e.g. a delay proxy in front of it)."""
    command = [
        str(MEMBER_SCRIPT), "--kubeconfig", cluster.kubeconfig,
        "--namespace", install.namespace, "--service-account", install.service_account,
        "--output", str(output), "--name", name, "--duration", duration,
    ]  # fmt: skip
    if server:
        command += ["--server", server]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False,
        env={**cluster.env(), "KUBECTL": cluster.kubectl_path},
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"hack/member-kubeconfig.sh failed: {result.stderr.strip()}")
    return result


_made: dict[tuple[str, bool, str | None], str] = {}


def member_kubeconfig(
    cluster: Cluster, *, create_namespaces: bool = True, server: str | None = None
) -> str:
    """The path of a kubeconfig of `cluster` as a member: the hub's ServiceAccount with only the
    member role (namespaces create with `create_namespaces`, as a Cluster with
    spec.createNamespaces needs). The chart is installed once per cluster and process; the
    release stays (reused by the next run), the kubeconfig is removed when the process ends."""
    key = (cluster.kubeconfig, create_namespaces, server)
    if key not in _made:
        release = "tsunagu-hub" if create_namespaces else "tsunagu-hub-no-ns"
        install = install_member(
            Helm(tool_path("helm")), cluster, SHARED_NAMESPACE, release,
            create_namespaces=create_namespaces,
        )  # fmt: skip
        directory = tempfile.mkdtemp(prefix="tsunagu-member-")
        # The token goes with the process; the release stays for the next one.
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        output = Path(directory) / "kubeconfig"
        write_member_kubeconfig(cluster, install, output, server=server)
        _made[key] = str(output)
    return _made[key]
