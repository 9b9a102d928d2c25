"""Restarting one component of the kwok test cluster (kube-apiserver, etcd) while the rest runs.

kwokctl v0.8.0 starts and stops only whole clusters (`kwokctl start|stop cluster`), so a
component is restarted as kwokctl runs it: the process named by its pid file is killed, and the
same binary is started again with the arguments
and working directory kwokctl recorded in the cluster's `kwok.yaml`, appending to the same log
and writing the new pid where kwokctl will look for it (`kwokctl delete cluster` and
`hack/cluster.sh down` still stop it). The new process is a session of its own: it outlives the
test that started it, as the rest of the cluster does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.waiting import wait_until

STOP_TIMEOUT_SECONDS = 10.0
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
    ports: tuple[int, ...]


class ControlPlane:
    """The processes of one kwokctl cluster (`--runtime binary`), from its working directory."""

    def __init__(self, cluster_dir: Path) -> None:
        self.cluster_dir = cluster_dir
        # Ports of stopped components, held until they start again (see `stop`).
        self._held: dict[str, _Held] = {}

    def component(self, name: str) -> Component:
        documents = list(yaml.safe_load_all((self.cluster_dir / "kwok.yaml").read_text()))
        for item in _components(documents):
            if item["name"] == name:
                return Component(
                    name=name,
                    binary=item["binary"],
                    args=tuple(item.get("args") or ()),
                    work_dir=item.get("workDir") or str(self.cluster_dir),
                    ports=tuple(int(port["port"]) for port in item.get("ports") or ()),
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
        """Kills the component (SIGKILL: a crash, as a node's OOM killer or a kubelet past the
        grace period would end it) and holds its ports until it starts again (a client's
        connection is reset, as by a server that is not there). kwokctl hands free ports to
        every cluster it creates, and another cluster's component taking this API server's port
        would break this cluster for good. Not SIGTERM: kube-apiserver's graceful shutdown
        closes its listener first and then drains for tens of seconds, the port free all along."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), timeout=STOP_TIMEOUT_SECONDS, message=f"{name} to exit")
        # Gone from /proc a moment before the last of its threads let go of its sockets.
        ports = self.component(name).ports
        self._held[name] = wait_until(
            lambda: _hold_all(ports), timeout=STOP_TIMEOUT_SECONDS, interval=0.01,
            message=f"the ports of {name} to be free",
        )  # fmt: skip

    def start(self, name: str) -> int:
        """Starts the component as kwokctl did, unless it runs already; returns its pid."""
        running = self.pid(name)
        if running is not None:
            return running
        component = self.component(name)
        args = list(component.args)
        if name in SERVING_ONLY_METRICS:
            args = [_free_secure_port(arg) for arg in args]
        held = self._held.pop(name, None)
        if held is not None:
            held.release()
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


class _Held:
    """Ports held for a stopped component: listening (nobody else may bind them, and the
    connections the killed process left in TIME_WAIT do not stop us), every connection reset at
    once, as clients of a server that is not there expect."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets
        self._threads = [
            threading.Thread(target=_refuse, args=(held,), daemon=True) for held in sockets
        ]
        for thread in self._threads:
            thread.start()

    def release(self) -> None:
        """Stops listening; returns once no accept holds a port any more."""
        for held in self.sockets:
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
            held.close()
        for thread in self._threads:
            thread.join(timeout=5)


def _refuse(held: socket.socket) -> None:
    while True:
        try:
            connection, _ = held.accept()
        except OSError:  # closed: the component starts again
            return
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()


def _hold_all(ports: tuple[int, ...]) -> _Held | None:
    """Every port held, or none."""
    held: list[socket.socket] = []
    try:
        for port in ports:
            held.append(socket.socket())
            held[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held[-1].bind(("127.0.0.1", port))
            held[-1].listen()
    except OSError:
        for item in held:
            item.close()
        return None
    return _Held(held)


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
