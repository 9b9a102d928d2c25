"""Checks before the operator starts, each failing with one line that names the flag or the file
to fix (`tsunagu run` prints it and exits 2): the kubeconfig, the API server, tsunagu's CRDs,
the ports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from tsunagu.api.names import CLUSTERS, DATASETS, GROUP, REGIONS, TRAINING_JOBS, VERSION
from tsunagu.controller.cluster.client import Kube, load_client_configuration

REQUIRED_RESOURCES = (REGIONS, DATASETS, TRAINING_JOBS, f"{TRAINING_JOBS}/status", CLUSTERS)
CHECK_TIMEOUT_SECONDS = 15.0


class StartupError(Exception):
    """What is wrong, in one line, naming the flag or the file."""


def kubeconfig_source() -> str:
    """Where the client configuration comes from, as a person would name it."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "the in-cluster service account"
    paths = os.environ.get("KUBECONFIG")
    if paths:
        return f"the kubeconfig {paths} (KUBECONFIG)"
    return f"the kubeconfig {Path('~/.kube/config').expanduser()}"


async def client_configuration() -> object:
    """The client configuration, or a StartupError naming the kubeconfig."""
    try:
        return await asyncio.to_thread(load_client_configuration)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StartupError(f"cannot read {kubeconfig_source()}: {reason}") from None


async def check_crds(client: Kube) -> None:
    """The API server answers and serves tsunagu's resources."""
    try:
        served = await asyncio.wait_for(
            client.api_group_resources(f"{GROUP}/{VERSION}"), CHECK_TIMEOUT_SECONDS
        )
    except ApiException as error:
        raise StartupError(
            f"the API server at {client.configuration.host} refused to say which resources "
            f"{GROUP}/{VERSION} serves ({error.status} {error.reason}); check {kubeconfig_source()}"
        ) from None
    except Exception as error:
        raise StartupError(
            f"cannot reach the API server at {client.configuration.host} "
            f"({type(error).__name__}: {error}); check {kubeconfig_source()}"
        ) from None
    missing = [r for r in REQUIRED_RESOURCES if served is None or r not in served]
    if missing:
        names = ", ".join(f"{r.split('/')[0]}.{GROUP}" for r in missing if "/" not in r)
        raise StartupError(
            f"tsunagu's CRDs are not installed in the cluster at {client.configuration.host} "
            f"(missing {GROUP}/{VERSION}: {names or ', '.join(missing)}); "
            "install them: kubectl apply -f crds/ (the Helm chart does it)"
        )


async def bind(flag: str, port: int, listen: Callable[[int], object]) -> None:
    """Runs `listen(port)` (which binds it), or a StartupError naming the flag."""
    try:
        result = listen(port)
        if asyncio.iscoroutine(result):
            await result
    except OSError as error:
        reason = error.strerror or str(error)
        raise StartupError(f"{flag} {port}: cannot listen on the port: {reason}") from None
