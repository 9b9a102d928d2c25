"""Fixtures of the operator scenarios: the Japan Regions, a running operator, and the member
clusters of the multi-cluster scenarios (tests/support/members.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, OperatorProcess
from tests.support.member import member_kubeconfig
from tests.support.members import (
    Connection,
    KubeconfigForHub,
    Member,
    Members,
    bring_up_members,
    connect,
)
from tests.support.scenario import free_port, japan_regions, wait_ready


@pytest.fixture(scope="session")
def regions(cluster: Cluster) -> list[str]:
    """The five Japan regions of hack/topology/japan.yaml, as Region objects."""
    items = japan_regions()
    cluster.apply(items)
    return [item["metadata"]["name"] for item in items]


@pytest.fixture
def start_operator(
    run_operator: Callable[..., OperatorProcess], regions: list[str]
) -> Callable[..., OperatorProcess]:
    """Starts `tsunagu run` and waits until it is healthy."""

    def start(*args: str) -> OperatorProcess:
        port = free_port()
        operator = run_operator(
            "--liveness-port", str(port), "--metrics-port", "0", "--retry-interval", "2", *args
        )
        wait_ready(operator, port)
        return operator

    return start


@pytest.fixture
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator()


@pytest.fixture(scope="session")
def members() -> Iterator[Members]:
    """The two member clusters (hack/members.sh up: started once, reused while up), member 1
    behind a delay proxy adding 15 ms per round trip."""
    try:
        found = bring_up_members()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    yield found
    found.close()


@pytest.fixture
def member_kubeconfig_for_hub(members: Members) -> KubeconfigForHub:
    """The hub's identity in each member, the kubeconfig put into the member's Secret on the
    hub: the chart's member mode installed in the member (real Helm), and a token of its
    ServiceAccount (hack/member-kubeconfig.sh): every multi-cluster test runs with the member
    role and nothing more. Member 1's path still goes through its delay proxy."""

    def restricted(member: Member) -> dict[str, Any]:
        path = member_kubeconfig(member.kube, create_namespaces=True)
        return member.kubeconfig_for_hub(yaml.safe_load(Path(path).read_text(encoding="utf-8")))

    return restricted


@pytest.fixture
def connect_members(
    cluster: Cluster,
    namespace: str,
    regions: list[str],
    members: Members,
    member_kubeconfig_for_hub: KubeconfigForHub,
) -> Iterator[Callable[..., Connection]]:
    """`connect_members(create_namespaces=False, namespace_in=None, only=None)`: the members'
    Secrets, Cluster objects and Regions on the hub, the test's namespace in the members;
    afterwards all of it is removed again, in the hub and in the members."""
    made: list[Connection] = []

    def make(**options: Any) -> Connection:
        connection = connect(cluster, namespace, members, member_kubeconfig_for_hub, **options)
        made.append(connection)
        return connection

    yield make
    for connection in made:
        connection.close()
