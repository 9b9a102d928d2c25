"""Blocking Kubernetes API calls the controller makes. Every method blocks: callers on the event
loop go through `asyncio.to_thread` (see `Kube.call`)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tsunagu.api.names import DATASETS, GROUP, REGIONS, TRAINING_JOBS, VERSION

logger = logging.getLogger(__name__)

COMPONENT = "tsunagu"
LIST_PAGE_SIZE = 500
T = TypeVar("T")


class Conflict(Exception):
    """The object exists already (HTTP 409)."""


def load_client_configuration() -> Any:
    configuration = client.Configuration()
    loader: Any = config
    try:
        loader.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        loader.load_kube_config(client_configuration=configuration)
    return configuration


class Kube:
    def __init__(self, configuration: Any = None, pool_size: int = 32) -> None:
        configuration = configuration or load_client_configuration()
        configuration.connection_pool_maxsize = pool_size
        # The generated client is typed by models; we speak plain dicts, so treat it as Any.
        self.api: Any = client.ApiClient(configuration)
        self.core: Any = client.CoreV1Api(self.api)
        self.custom: Any = client.CustomObjectsApi(self.api)

    async def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(function, *args, **kwargs)

    # --- reads used once at start-up to prime the view -----------------------------------------
    def list_all(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "nodes": self._list_pages(self.core.list_node),
            "pods": self._list_pages(self.core.list_pod_for_all_namespaces),
            "regions": self._list_pages(
                self.custom.list_cluster_custom_object, GROUP, VERSION, REGIONS
            ),
            "datasets": self._list_pages(
                self.custom.list_cluster_custom_object, GROUP, VERSION, DATASETS
            ),
            "trainingjobs": self._list_pages(
                self.custom.list_cluster_custom_object, GROUP, VERSION, TRAINING_JOBS
            ),
        }

    def _list_pages(self, method: Callable[..., Any], *args: Any) -> list[dict[str, Any]]:
        """Every item, read page by page as plain JSON: a cluster with 10,000 objects never sits
        in memory twice (once as the client's models, once as dicts) while the operator starts."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page_args: dict[str, Any] = {"limit": LIST_PAGE_SIZE, "_preload_content": False}
            if token:
                page_args["_continue"] = token
            response = method(*args, **page_args)
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    # --- children of a TrainingJob -------------------------------------------------------------
    def create_service(self, body: Mapping[str, Any]) -> None:
        try:
            _drain(
                self.core.create_namespaced_service(
                    body["metadata"]["namespace"], body, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 409:
                raise

    def create_pod(self, body: Mapping[str, Any]) -> None:
        try:
            # Responses of writes are not read: decoding a Pod into the client's models costs
            # more CPU than the request itself.
            _drain(
                self.core.create_namespaced_pod(
                    body["metadata"]["namespace"], body, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(body["metadata"]["name"]) from error
            raise

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.core.read_namespaced_pod(name, namespace)
        return dict(self.api.sanitize_for_serialization(pod))

    def pod_exists(self, namespace: str, name: str) -> bool:
        try:
            _drain(self.core.read_namespaced_pod(name, namespace, _preload_content=False))
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def bind_pod(self, namespace: str, name: str, node: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        # The response is a Status the generated model cannot deserialize; skip decoding it.
        _drain(
            self.core.create_namespaced_pod_binding(name, namespace, body, _preload_content=False)
        )

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            _drain(
                self.core.delete_namespaced_pod(
                    name, namespace, grace_period_seconds=0, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # --- status -------------------------------------------------------------------------------
    def create_event(self, body: Mapping[str, Any]) -> None:
        _drain(
            self.core.create_namespaced_event(
                body["metadata"]["namespace"], body, _preload_content=False
            )
        )

    def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patch = {"status": status}
        _drain(
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, TRAINING_JOBS, name, patch, _preload_content=False
            )
        )

    def patch_region_status(self, name: str, status: Mapping[str, Any]) -> None:
        _drain(
            self.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, REGIONS, name, {"status": status}, _preload_content=False
            )
        )


def _drain(response: Any) -> None:
    """Reads and releases a raw response so its connection goes back to the pool."""
    response.read()
    response.release_conn()


def event_body(
    involved: Mapping[str, Any], kind: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about `involved`, reported by the tsunagu component."""
    metadata = involved["metadata"]
    namespace = metadata.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": metadata["name"],
            "namespace": namespace,
            "uid": metadata.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status == 404
