"""The schedulers of the pod-group benchmark, run as local processes beside the kwok cluster's
own: kube-scheduler with scheduler-plugins' Coscheduling (hack/tools.sh coscheduling) and, for
the bursts created before their scheduler starts, the cluster's own kube-scheduler under a
profile of its own; the PodGroup CRD they read, and the pods of the harness."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from bench_limit import clear_namespace  # noqa: E402
from bench_operator import create_namespace, kubeconfig  # noqa: E402

PG_GROUP, PG_VERSION, PG_PLURAL = "scheduling.x-k8s.io", "v1alpha1", "podgroups"
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
COSCHEDULING = "coscheduling"  # the scheduler name of Coscheduling's profile
PLAIN = "bench-kube-scheduler"  # kube-scheduler's default profile, started after the burst


def tools(*args: str) -> str:
    return subprocess.run([str(REPO / "hack" / "tools.sh"), *args], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def kubectl(*args: str, input: str | None = None) -> str:
    return subprocess.run(
        [tools("path", "kubectl"), "--kubeconfig", kubeconfig(), *args],
        input=input,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def ensure_podgroup_crd() -> str:
    """The PodGroup CRD: tsunagu's own when crds/ brought it, else scheduler-plugins' (read from
    its module at run time)."""
    present = kubectl("get", "crd", f"{PG_PLURAL}.{PG_GROUP}", "--ignore-not-found", "-o", "name")
    if present.strip():
        return "already installed"
    crd = Path(tools("module", "scheduler-plugins")) / "manifests" / "coscheduling" / "crd.yaml"
    kubectl("apply", "--server-side", "-f", str(crd))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PG_PLURAL}.{PG_GROUP}")
    return f"scheduler-plugins {crd.parent.parent.parent.name.split('@')[-1]}"


class LocalScheduler:
    """A kube-scheduler as a local process with one profile of its own beside the cluster's
    default scheduler: Coscheduling's build (hack/tools.sh coscheduling) or, for the pre-created
    bursts, the cluster's own kube-scheduler binary. Client rate limits as high as kwokctl gives
    the cluster's scheduler."""

    def __init__(self, binary: str, profile: dict[str, Any]) -> None:
        self.name = profile["schedulerName"]
        self.folder = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "leaderElection": {"leaderElect": False},
            "clientConnection": {"kubeconfig": kubeconfig(), "qps": 5000, "burst": 10000},
            "profiles": [profile],
        }  # fmt: skip
        (self.folder / "config.yaml").write_text(yaml.safe_dump(config))
        self.log = (self.folder / "scheduler.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "--config", str(self.folder / "config.yaml"), "--secure-port", "0",
             "--v", "1"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, core: Any, timeout: float = 120) -> None:
        """Ready when it binds a probe pod (its informers, the PodGroups' among them, synced)."""
        namespace = f"bench-probe-{uuid.uuid4().hex[:6]}"
        create_namespace(core, namespace)
        core.create_namespaced_pod(namespace, pod("probe", self.name, None), _preload_content=False)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"scheduler {self.name} exited; log: {self.log.name}")
            if core.read_namespaced_pod("probe", namespace).spec.node_name:
                clear_namespace(core, namespace)
                return
            time.sleep(0.5)
        raise SystemExit(f"scheduler {self.name} bound no probe pod; log: {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def coscheduling(permit_wait_seconds: int = 10) -> LocalScheduler:
    profile = {
        "schedulerName": COSCHEDULING,
        "plugins": {"multiPoint": {"enabled": [{"name": "Coscheduling"}]},
                    "queueSort": {"enabled": [{"name": "Coscheduling"}],
                                  "disabled": [{"name": "*"}]}},
        "pluginConfig": [{"name": "Coscheduling",
                          "args": {"permitWaitingTimeSeconds": permit_wait_seconds}}],
    }  # fmt: skip
    return LocalScheduler(tools("path", "coscheduling-scheduler"), profile)


def plain_kube_scheduler() -> LocalScheduler:
    return LocalScheduler(tools("path", "kube-scheduler"), {"schedulerName": PLAIN})


def pod(name: str, scheduler: str, group: str | None) -> dict[str, Any]:
    labels = {POD_GROUP_LABEL: group} if group else {}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
        "spec": {"schedulerName": scheduler, "containers": [
            {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    }  # fmt: skip
