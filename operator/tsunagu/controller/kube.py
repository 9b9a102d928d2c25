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
MERGE_PATCH = "application/merge-patch+json"
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

    # --- writes: the hot path of gang binding ------------------------------------------------
    def _send(
        self, method: str, path: str, body: Any, content_type: str = "application/json"
    ) -> None:
        """One request, its response drained unread; raises ApiException for a non-2xx answer.

        It skips the generated methods' per-call argument validation and model layer: for a
        plain dict both are pure overhead, paid for every pod created and bound.
        """
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        response.read()
        if not 200 <= response.status <= 299:
            body = response.data.decode("utf-8", "replace") if response.data else None
            raise ApiException.from_response(http_resp=response, body=body, data=None)

    def create_service(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            self._send("POST", f"/api/v1/namespaces/{namespace}/services", body)
        except ApiException as error:
            if error.status != 409:
                raise

    def create_pod(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        try:
            self._send("POST", f"/api/v1/namespaces/{namespace}/pods", body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(body["metadata"]["name"]) from error
            raise

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        response = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        try:
            return dict(json.loads(response.data))
        finally:
            response.release_conn()

    def pod_exists(self, namespace: str, name: str) -> bool:
        try:
            self.read_pod(namespace, name)
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
        self._send("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", body)

    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self._send(
                "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", {"gracePeriodSeconds": 0}
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def create_event(self, body: Mapping[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        self._send("POST", f"/api/v1/namespaces/{namespace}/events", body)

    # --- status -------------------------------------------------------------------------------
    def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{TRAINING_JOBS}/{name}/status"
        self._send("PATCH", path, {"status": status}, MERGE_PATCH)

    def patch_region_status(self, name: str, status: Mapping[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/{REGIONS}/{name}/status"
        self._send("PATCH", path, {"status": status}, MERGE_PATCH)


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
