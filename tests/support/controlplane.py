"""Restarting one component of the kwok test cluster (kube-apiserver, etcd) while the rest runs.

kwokctl v0.8.0 starts and stops only whole clusters (`kwokctl start|stop cluster`), so a
component is restarted as kwokctl runs it: the process named by its pid file is stopped
(SIGTERM, as an orderly restart would), and the same binary is started again with the arguments
and working directory kwokctl recorded in the cluster's `kwok.yaml`, appending to the same log
and writing the new pid where kwokctl will look for it (`kwokctl delete cluster` and
`hack/cluster.sh down` still stop it). The new process is a session of its own: it outlives the
test that started it, as the rest of the cluster does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.waiting import wait_until

STOP_TIMEOUT_SECONDS = 30.0
# Components whose port serves only their health and metrics: if another cluster took it while
# the component was down (kwokctl hands out free ports to every cluster it creates), the
# component is started on another one rather than not at all.
SERVING_ONLY_METRICS = ("kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class Component:
    name: str
    binary: str
    args: tuple[str, ...]
    work_dir: str


class ControlPlane:
    """The processes of one kwokctl cluster (`--runtime binary`), from its working directory."""

    def __init__(self, cluster_dir: Path) -> None:
        self.cluster_dir = cluster_dir

    def component(self, name: str) -> Component:
        documents = list(yaml.safe_load_all((self.cluster_dir / "kwok.yaml").read_text()))
        for item in _components(documents):
            if item["name"] == name:
                return Component(
                    name=name,
                    binary=item["binary"],
                    args=tuple(item.get("args") or ()),
                    work_dir=item.get("workDir") or str(self.cluster_dir),
                )
        raise LookupError(f"no component {name!r} in {self.cluster_dir / 'kwok.yaml'}")

    def names(self) -> list[str]:
        """Every component, in the order kwokctl starts them (etcd first)."""
        documents = list(yaml.safe_load_all((self.cluster_dir / "kwok.yaml").read_text()))
        return [item["name"] for item in _components(documents)]

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.cluster_dir / "pids" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_SECONDS."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), timeout=10, message=f"{name} to exit")

    def start(self, name: str) -> int:
        """Starts the component as kwokctl did, unless it runs already; returns its pid."""
        running = self.pid(name)
        if running is not None:
            return running
        component = self.component(name)
        args = list(component.args)
        if name in SERVING_ONLY_METRICS:
            args = [_free_secure_port(arg) for arg in args]
        log = (self.cluster_dir / "logs" / f"{name}.log").open("ab")
        try:
            process = subprocess.Popen(
                [component.binary, *args],
                cwd=component.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        (self.cluster_dir / "pids" / f"{name}.pid").write_text(str(process.pid))
        return process.pid


def _components(documents: list[Any]) -> list[dict[str, Any]]:
    """kwok.yaml holds one document per object; the cluster's components are in the
    KwokctlConfiguration."""
    for document in documents:
        if isinstance(document, dict) and document.get("components"):
            return list(document["components"])
    return []


def _free_secure_port(arg: str) -> str:
    if not arg.startswith("--secure-port="):
        return arg
    port = int(arg.split("=", 1)[1])
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return f"--secure-port={probe.getsockname()[1]}"
    return arg


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a child of ours that exited unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
