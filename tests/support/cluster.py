"""Access to the local test cluster (hack/cluster.sh) and to operator processes run against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import ControlPlane
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"


def tool_path(name: str) -> str:
    """Path of a tool built by hack/tools.sh (kubectl, helm, …)."""
    result = subprocess.run(
        [str(HACK / "tools.sh"), "path", name], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


class Cluster:
    """A running cluster reached through one kubeconfig; with `control_plane` (the kwok cluster
    of hack/cluster.sh), its API server and etcd can be restarted under the tests."""

    def __init__(self, kubeconfig: str, control_plane: ControlPlane | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl_path = tool_path("kubectl")
        self.control_plane = control_plane

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        command = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def apply(self, manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Server-side applies YAML text, one object or a list of objects."""
        if isinstance(manifest, str):
            text = manifest
        else:
            objects = [manifest] if isinstance(manifest, Mapping) else list(manifest)
            text = yaml.safe_dump_all(objects)
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=text)

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def api_client(self) -> Any:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
        return client.ApiClient(configuration)

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    # --- the control plane under the tests ------------------------------------------------------
    def restart_apiserver(self, down_seconds: float = 0.0) -> None:
        """Kills kube-apiserver (every connection to it ends), keeps it down `down_seconds`,
        starts it again and returns once the control plane acts again (`ensure_control_plane`)."""
        self._restart("kube-apiserver", down_seconds)

    def restart_etcd(self, down_seconds: float = 0.0) -> None:
        """Kills etcd under a running kube-apiserver (which answers errors meanwhile), keeps it
        down `down_seconds`, starts it again and returns once the control plane acts again."""
        self._restart("etcd", down_seconds)

    def ensure_control_plane(self, timeout: float = 120) -> None:
        """Whatever a test did, every component runs again and acts, as kubelet would see to
        for static pods: kube-controller-manager and kube-scheduler exit when they cannot renew
        their own Lease (an API server down for more than 10 s); started again, each must take
        that Lease before it acts (a new namespace gets its ServiceAccount, pods are collected)."""
        plane = self._plane()
        for name in ("etcd", "kube-apiserver"):
            plane.start(name)
        self.wait_apiserver_ready(timeout)
        restarted_at = time.time()
        restarted = [name for name in plane.names() if plane.pid(name) is None]
        for name in restarted:
            plane.start(name)
        for name in restarted:
            if name in ("kube-controller-manager", "kube-scheduler"):
                self._wait_lease_taken(name, since=restarted_at, timeout=timeout)

    def wait_apiserver_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            result = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            return result.returncode == 0

        wait_until(ready, timeout=timeout, interval=0.3, message="the API server to be ready")

    def _wait_lease_taken(self, name: str, since: float, timeout: float) -> None:
        def taken() -> bool:
            lease = self.get_json("lease", name, "-n", "kube-system")
            acquired = (lease.get("spec") or {}).get("acquireTime")
            return bool(acquired) and _timestamp(acquired) >= since - 1

        wait_until(taken, timeout=timeout, interval=0.5, message=f"{name} to lead again")

    def _restart(self, name: str, down_seconds: float) -> None:
        plane = self._plane()
        try:
            plane.stop(name)
            time.sleep(down_seconds)
        finally:
            plane.start(name)
        self.ensure_control_plane()

    def _plane(self) -> ControlPlane:
        if self.control_plane is None:
            raise RuntimeError("this cluster's control plane is not the kwok cluster's processes")
        return self.control_plane


class OperatorProcess:
    """`tsunagu run` as a child process; its output goes to a log file shown when a test fails."""

    def __init__(
        self, cluster: Cluster, args: Iterable[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="tsunagu-operator-", suffix=".log", delete=False
        )
        self.command = [sys.executable, "-m", "tsunagu.cli", "run", *args]
        self.process = subprocess.Popen(
            self.command,
            env={**cluster.env(), "PYTHONUNBUFFERED": "1", **dict(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL: the crash a node failure or OOM would cause."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


DATASET_IN_USE = "tsunagu.io/dataset-in-use"
MEMBER_OBJECTS = "tsunagu.io/member-objects"


def release_datasets(cluster: Cluster, namespace: str) -> None:
    """Removes tsunagu's finalizers from every Dataset (in use) and TrainingJob (objects in a
    member cluster) of the namespace: what an administrator does after stopping tsunagu."""
    for kind, finalizer in (("datasets", DATASET_IN_USE), ("trainingjobs", MEMBER_OBJECTS)):
        found = cluster.kubectl("get", kind, "-n", namespace, "-o", "json", check=False)
        if found.returncode != 0:
            continue
        for item in json.loads(found.stdout)["items"]:
            finalizers = item["metadata"].get("finalizers") or []
            if finalizer not in finalizers:
                continue
            rest = [f for f in finalizers if f != finalizer]
            patch = json.dumps({"metadata": {"finalizers": rest or None}})
            name = item["metadata"]["name"]
            cluster.kubectl("patch", kind, name, "-n", namespace, "--type=merge", "-p", patch,
                            check=False)  # fmt: skip


def wait_for_namespace_gone(cluster: Cluster, name: str, timeout: float = 120) -> None:
    def gone() -> bool:
        result = cluster.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name")
        return result.stdout.strip() == ""

    wait_until(gone, timeout=timeout, interval=0.5, message=f"namespace {name} to be deleted")
