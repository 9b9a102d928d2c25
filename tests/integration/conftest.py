"""Fixtures of the operator scenarios: the Japan Regions and a running operator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.cluster import Cluster, OperatorProcess
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
