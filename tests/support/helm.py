"""Helm for the chart tests: the built helm binary, the agreed RBAC rules, and helpers that read
rendered manifests."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tests.support.cluster import REPO_ROOT

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
    ("tsunagu.io", "regions", "get list watch"),
    ("tsunagu.io", "datasets", "get list watch patch"),
    ("tsunagu.io", "regions/status datasets/status", "get patch update"),
    ("tsunagu.io", "throughputprofiles", "get list watch create"),
    ("tsunagu.io", "throughputprofiles/status", "patch"),
    ("", "nodes", "get list watch"),
    ("", "pods", "get list watch create delete patch"),
    ("", "pods/binding", "create"),
    ("", "services", "get list watch create delete"),
    ("tsunagu.io", "clusters", "get list watch"),
    ("tsunagu.io", "clusters/status", "patch"),
    ("scheduling.x-k8s.io", "podgroups", "get list watch patch"),
    ("scheduling.x-k8s.io", "podgroups/status", "patch"),
)

# What the hub does in a member cluster (the chart's member mode; docs/clusters.md): namespaces
# create comes only with member.createNamespaces.
MEMBER_RULES = _rules(
    ("", "nodes", "get list watch"),
    ("", "pods", "get list watch create delete"),
    ("", "pods/binding", "create"),
    ("", "services", "get create delete"),
    ("", "configmaps", "get list watch create delete"),
    ("", "events", "create patch"),
    ("", "namespaces", "get"),
)
MEMBER_NAMESPACE_CREATE = ("", "namespaces", "create")

# The leader-election Role in the release namespace: the one Lease by name, and create (which
# RBAC cannot limit by name).
LEASE_RULES = frozenset(
    {
        ("coordination.k8s.io", "leases", "get", ("tsunagu",)),
        ("coordination.k8s.io", "leases", "update", ("tsunagu",)),
        ("coordination.k8s.io", "leases", "watch", ("tsunagu",)),
        ("coordination.k8s.io", "leases", "create", ()),
    }
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
