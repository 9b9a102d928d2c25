"""The member clusters of the multi-cluster tests (issue 17, docs/clusters.md), and what the hub
is told about them.

Two kwok clusters of their own (hack/members.sh: `${CLUSTER_NAME}-m1`, `-m2`, state beside the
hub's), each a real kube-apiserver, etcd, kube-scheduler and kube-controller-manager with kwok
GPU nodes of one region (hack/topology/member-*.yaml). Like the hub they are brought up once and
reused while up; `make cluster-down` takes them down.

Member 1 is reached by the hub through a `DelayProxy` adding 15 ms to every round trip (another
site's API server is that far); member 2 directly. The proxy is also how a test partitions the
hub from member 1 while member 1 goes on working (`DelayProxy.partition`). Its TLS is checked
all the way: kwokctl's serving certificate names 127.0.0.1 (and localhost), so the kubeconfig
handed to the hub only has its `server` rewritten to the proxy's 127.0.0.1 port.

On the hub, a test connects the members (`connect`): per member a Secret with the kubeconfig in
`default` (the tests' operator namespace), a Cluster object and its Region with `clusterRef`,
and the test's namespace in each member unless told otherwise. `Connection.close` removes all
of it again, in the hub and in the members, so the next test finds every GPU free.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.support.cluster import HACK, Cluster
from tests.support.controlplane import ControlPlane
from tests.support.delay_proxy import DelayProxy
from tests.support.waiting import wait_until

# The operators of the tests take their Lease, and so read member Secrets, in `default`.
OPERATOR_NAMESPACE = "default"
MEMBER_FINALIZER = "tsunagu.io/member-objects"
HUB_LABELS = ("tsunagu.io/hub-namespace", "tsunagu.io/hub-job", "tsunagu.io/hub-job-uid")
# Every object these helpers make on the hub carries it, so that one selector removes them all.
MADE_BY = "tsunagu.io/test-member"
MEMBER1_ADDED_RTT_MS = 15.0


@dataclass(frozen=True)
class MemberSpec:
    index: int
    # The Cluster object's name on the hub: on purpose unlike the region's, so that a cluster
    # name used where a region's is meant (or the other way round) shows.
    name: str
    region: str
    topology: Path
    added_rtt_ms: float | None  # through a delay proxy, or directly (None)


MEMBER_SPECS = (
    MemberSpec(1, "member-fukuoka", "fukuoka-cloud", HACK / "topology" / "member-fukuoka.yaml",
               MEMBER1_ADDED_RTT_MS),
    MemberSpec(2, "member-hokkaido", "hokkaido-cloud", HACK / "topology" / "member-hokkaido.yaml",
               None),
)  # fmt: skip


@dataclass
class Member:
    """One member cluster: `kube` is the admin's direct access (kubectl, its control plane)."""

    spec: MemberSpec
    kube: Cluster
    proxy: DelayProxy | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def region(self) -> str:
        return self.spec.region

    def admin_kubeconfig(self) -> dict[str, Any]:
        return dict(yaml.safe_load(Path(self.kube.kubeconfig).read_text(encoding="utf-8")))

    def kubeconfig_for_hub(self, kubeconfig: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The kubeconfig the hub is handed (the admin's unless another is given), its server
        the delay proxy's when this member has one. TLS is verified as before: the proxy
        forwards the bytes, and the API server's certificate covers 127.0.0.1."""
        config = copy.deepcopy(dict(kubeconfig or self.admin_kubeconfig()))
        if self.proxy is not None:
            for entry in config.get("clusters") or []:
                entry["cluster"]["server"] = f"https://127.0.0.1:{self.proxy.port}"
        return config

    def nodes(self) -> list[str]:
        items = self.kube.get_json("nodes", "-l", f"topology.kubernetes.io/region={self.region}")
        return sorted(node["metadata"]["name"] for node in items["items"])

    def namespace_exists(self, namespace: str) -> bool:
        found = self.kube.kubectl("get", "namespace", namespace, "--ignore-not-found", "-o", "name")
        return bool(found.stdout.strip())

    def pods(self, namespace: str, job: str | None = None) -> list[dict[str, Any]]:
        """The tsunagu pods of a namespace (of one job), not being deleted, by name."""
        selector = f"tsunagu.io/job={job}" if job else "tsunagu.io/job"
        items = self.kube.get_json("pods", "-n", namespace, "-l", selector)["items"]
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return sorted(live, key=lambda p: p["metadata"]["name"])

    def anchor(self, namespace: str, job: str) -> dict[str, Any] | None:
        found = self.kube.kubectl(
            "get", "configmap", f"tsunagu-{job}", "-n", namespace,
            "--ignore-not-found", "-o", "json",
        )  # fmt: skip
        return json.loads(found.stdout) if found.stdout.strip() else None

    def anchors(self, namespace: str) -> list[dict[str, Any]]:
        items = self.kube.get_json("configmaps", "-n", namespace, "-l", "tsunagu.io/hub-job-uid")
        return list(items["items"])

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.kube.kubectl(
            "get", "service", name, "-n", namespace, "--ignore-not-found", "-o", "json"
        )
        return json.loads(found.stdout) if found.stdout.strip() else None


@dataclass
class Members:
    members: list[Member]

    @property
    def m1(self) -> Member:
        return self.members[0]

    @property
    def m2(self) -> Member:
        return self.members[1]

    def __iter__(self) -> Any:
        return iter(self.members)

    def by_name(self, name: str) -> Member:
        return next(member for member in self.members if member.name == name)

    def close(self) -> None:
        for member in self.members:
            if member.proxy is not None:
                member.proxy.stop()


def _members_sh(*args: str) -> str:
    result = subprocess.run(
        [str(HACK / "members.sh"), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"hack/members.sh {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip()


def bring_up_members() -> Members:
    """Both member clusters up (reused when up), member 1 behind its delay proxy."""
    _members_sh("up")
    members = []
    for spec in MEMBER_SPECS:
        kube = Cluster(
            _members_sh("kubeconfig", str(spec.index)),
            ControlPlane(Path(_members_sh("workdir", str(spec.index)))),
        )
        member = Member(spec, kube)
        if spec.added_rtt_ms is not None:
            server = urlsplit(member.admin_kubeconfig()["clusters"][0]["cluster"]["server"])
            if not (server.hostname and server.port):
                raise RuntimeError(f"member {spec.name}: no host and port in {server.geturl()}")
            proxy = DelayProxy(server.hostname, server.port)
            proxy.set_rtt_ms(spec.added_rtt_ms)
            member.proxy = proxy.start()
        members.append(member)
    for member in members:
        _check_hub_path(member)
    return Members(members)


def _check_hub_path(member: Member) -> None:
    """The kubeconfig the hub gets works as it is: through the proxy, with TLS verified."""
    path = Path(member.kube.kubeconfig).with_name("hub-path.kubeconfig")
    path.write_text(yaml.safe_dump(member.kubeconfig_for_hub()), encoding="utf-8")
    probe = Cluster(str(path))
    answer = probe.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    assert answer.returncode == 0, (
        f"member {member.name}: the hub's path to its API server does not answer: {answer.stderr}"
    )


def member_regions(member: Member) -> list[dict[str, Any]]:
    """The member's Regions as the hub holds them: its topology file's, with `clusterRef`."""
    output = subprocess.run(
        [sys.executable, str(HACK / "topology.py"), "regions", str(member.spec.topology)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    items = list(json.loads(output)["items"])
    for item in items:
        item["spec"]["clusterRef"] = {"name": member.name}
    return items


def secret(name: str, kubeconfig: Mapping[str, Any]) -> dict[str, Any]:
    text = yaml.safe_dump(dict(kubeconfig))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        "data": {"kubeconfig": base64.b64encode(text.encode()).decode()},
    }


def cluster_object(name: str, secret_name: str, create_namespaces: bool) -> dict[str, Any]:
    return {
        "apiVersion": "tsunagu.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "kubeconfigSecretRef": {"name": secret_name, "key": "kubeconfig"},
            "createNamespaces": create_namespaces,
        },
    }


def _made_by(body: dict[str, Any], token: str) -> dict[str, Any]:
    body["metadata"].setdefault("labels", {})[MADE_BY] = token
    return body


# How the hub's identity in a member is chosen: the admin's kubeconfig unless a test (the chart's
# member-mode RBAC tests) hands a restricted one.
KubeconfigForHub = Callable[[Member], Mapping[str, Any]]


@dataclass
class Connection:
    """The members as one test's hub knows them; `close` undoes it all."""

    hub: Cluster
    namespace: str
    members: Members
    connected: list[Member]
    token: str
    _regions: list[str] = field(default_factory=list)

    def region_names(self) -> list[str]:
        return list(self._regions)

    def close(self) -> None:
        """Removes the hub's jobs of the namespace (the finalizer the hub puts on jobs with
        objects in a member is lifted: the operator of the test may have stopped, or the member
        may be cut off), the Cluster objects, Regions and Secrets, then everything of the
        namespace in every member, and waits until the members' GPUs are free again."""
        group = f"/apis/tsunagu.io/v1alpha1/namespaces/{self.namespace}/trainingjobs"
        self.hub.kubectl("delete", "--raw", group, check=False)
        for item in self.hub.get_json("trainingjobs", "-n", self.namespace)["items"]:
            finalizers = item["metadata"].get("finalizers") or []
            if MEMBER_FINALIZER in finalizers:
                rest = [f for f in finalizers if f != MEMBER_FINALIZER]
                patch = json.dumps({"metadata": {"finalizers": rest or None}})
                self.hub.kubectl(
                    "patch", "trainingjob", item["metadata"]["name"], "-n", self.namespace,
                    "--type=merge", "-p", patch, check=False,
                )  # fmt: skip
        self.hub.kubectl(
            "delete", "cluster.tsunagu.io,region.tsunagu.io", "-l", f"{MADE_BY}={self.token}",
            "--wait=false", check=False,
        )  # fmt: skip
        self.hub.kubectl(
            "delete", "secret", "-n", OPERATOR_NAMESPACE, "-l", f"{MADE_BY}={self.token}",
            check=False,
        )  # fmt: skip
        for member in self.members:
            if member.proxy is not None:
                member.proxy.partition(False)
            clean_member_namespace(member, self.namespace)


def connect(
    hub: Cluster,
    namespace: str,
    members: Members,
    kubeconfig_for_hub: KubeconfigForHub,
    *,
    create_namespaces: bool = False,
    namespace_in: Iterable[Member] | None = None,
    only: Sequence[Member] | None = None,
    regions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Connection:
    """Tells the hub about the members (`only` some): Secret, Cluster and Regions (those of its
    topology file, or `regions[member name]`, given their clusterRef); creates `namespace` in
    each member of `namespace_in` (all by default)."""
    # Never all digits and "e" (YAML's float, which a label value may not be): a letter first.
    token = f"c{uuid.uuid4().hex[:10]}"
    chosen = list(only) if only is not None else list(members)
    connection = Connection(hub, namespace, members, chosen, token)
    wanted = chosen if namespace_in is None else list(namespace_in)
    for member in wanted:
        if not member.namespace_exists(namespace):
            member.kube.kubectl("create", "namespace", namespace)
    for member in chosen:
        secret_name = f"{member.name}-kubeconfig-{token}"
        hub.apply(_made_by(secret(secret_name, kubeconfig_for_hub(member)), token))
        hub.apply(_made_by(cluster_object(member.name, secret_name, create_namespaces), token))
        chosen_regions = member_regions(member)
        if regions is not None and member.name in regions:
            chosen_regions = [copy.deepcopy(dict(r)) for r in regions[member.name]]
            for region in chosen_regions:
                region["spec"]["clusterRef"] = {"name": member.name}
        for region in chosen_regions:
            hub.apply(_made_by(region, token))
            connection._regions.append(region["metadata"]["name"])
    return connection


def clean_member_namespace(member: Member, namespace: str) -> None:
    """Everything of the namespace in the member goes: the anchors, pods (at once), Services,
    then the namespace itself in the background; returns once no pod of it holds a GPU."""
    if not member.namespace_exists(namespace):
        return
    base = f"/api/v1/namespaces/{namespace}"
    member.kube.kubectl("delete", "--raw", f"{base}/configmaps", check=False)
    member.kube.kubectl("delete", "--raw", f"{base}/pods?gracePeriodSeconds=0", check=False)
    for service in member.kube.get_json("services", "-n", namespace)["items"]:
        member.kube.kubectl(
            "delete", "service", service["metadata"]["name"], "-n", namespace, check=False
        )
    wait_until(
        lambda: not member.kube.get_json("pods", "-n", namespace)["items"],
        timeout=120, interval=0.3, message=f"the pods of {namespace} in {member.name} to be gone",
    )  # fmt: skip
    member.kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
