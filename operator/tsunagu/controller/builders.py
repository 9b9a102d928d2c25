"""Pure builders of the Kubernetes objects a TrainingJob owns: its pods and its headless Service.

They take plain dicts and typed specs and return plain dicts, so they are tested without a cluster.
Names are deterministic (`<job>-<rank>`, Service `<job>`): creating an object that exists already
answers 409, which means "already done".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from tsunagu.api.members import (
    ANCHOR_KIND,
    HUB_JOB_LABEL,
    HUB_JOB_UID_LABEL,
    HUB_NAMESPACE_LABEL,
    anchor_name,
)
from tsunagu.api.names import (
    API_VERSION,
    GPU_RESOURCE,
    JOB_LABEL,
    RANK_LABEL,
    REGION_LABEL,
    REGION_POD_LABEL,
    SCHEDULER_NAME,
    TRAINING_JOB_KIND,
)
from tsunagu.api.types import DatasetSpec, PlacementMode, TrainingJobSpec

MASTER_PORT = 29500
DATASET_VOLUME = "tsunagu-dataset"
DATASET_MOUNT_PATH = "/data"


def pod_name(job_name: str, rank: int) -> str:
    return f"{job_name}-{rank}"


def service_name(job_name: str) -> str:
    return job_name


def owner_reference(job_body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = job_body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": TRAINING_JOB_KIND,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_labels(job: TrainingJobSpec) -> dict[str, str]:
    return {JOB_LABEL: job.name}


def build_service(job: TrainingJobSpec, job_body: Mapping[str, Any]) -> dict[str, Any]:
    """Headless Service that gives rank 0 a stable DNS name for MASTER_ADDR.

    It selects rank 0 alone: the other ranks find each other through rank 0's rendezvous, and a
    Service of one pod costs the endpoint controllers one update per gang instead of one per pod
    coming up (about a sixth of a gang's API writes saved).
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job.name),
            "namespace": job.namespace,
            "labels": job_labels(job),
            "ownerReferences": [owner_reference(job_body)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {**job_labels(job), RANK_LABEL: "0"},
            # Ranks must find each other before they report ready.
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
        },
    }


def dataset_environment(dataset: DatasetSpec | None, region: str) -> list[dict[str, str]]:
    if dataset is None:
        return []
    values = {
        "TSUNAGU_DATASET_NAME": dataset.name,
        "TSUNAGU_DATASET_HOME_REGION": dataset.home_region,
        "TSUNAGU_DATASET_RESIDENCY": str(dataset.residency.mode),
        "TSUNAGU_DATASET_LOCAL": "true" if _data_is_local(dataset, region) else "false",
    }
    if dataset.access.endpoint:
        values["TSUNAGU_DATASET_ENDPOINT"] = dataset.access.endpoint
    if dataset.access.pvc_name and _data_is_local(dataset, region):
        values["TSUNAGU_DATASET_PATH"] = DATASET_MOUNT_PATH
    return [{"name": key, "value": value} for key, value in values.items()]


def _data_is_local(dataset: DatasetSpec, region: str) -> bool:
    return region == dataset.home_region or region in dataset.residency.replica_regions


def build_pod(
    job: TrainingJobSpec,
    job_body: Mapping[str, Any],
    rank: int,
    region: str,
    dataset: DatasetSpec | None,
    region_selector: Mapping[str, str] | None = None,
    extra_tolerations: Sequence[Mapping[str, str]] = (),
    node: str | None = None,
) -> dict[str, Any]:
    """Pod of one rank, wired for torch.distributed (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT).
    `extra_tolerations` (the operator's --gang-toleration) are added to the template's own.

    In Bind mode tsunagu is the pod's scheduler: with `node`, the pod is created on it (bound
    from its first version), else it is bound after creation. In Delegate mode a required node
    affinity keeps the default scheduler inside the chosen region.
    """
    template = copy.deepcopy(dict(job_body.get("spec", {}).get("template") or {}))
    template_metadata = template.get("metadata") or {}
    spec: dict[str, Any] = template.get("spec") or {}
    labels = {
        **(template_metadata.get("labels") or {}),
        JOB_LABEL: job.name,
        RANK_LABEL: str(rank),
        REGION_POD_LABEL: region,
    }
    name = pod_name(job.name, rank)
    master = f"{pod_name(job.name, 0)}.{service_name(job.name)}.{job.namespace}.svc"
    environment = [
        {"name": "WORLD_SIZE", "value": str(job.replicas)},
        {"name": "RANK", "value": str(rank)},
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "TSUNAGU_REGION", "value": region},
        *dataset_environment(dataset, region),
    ]
    containers = spec.get("containers") or [{"name": "trainer", "image": "busybox"}]
    for index, container in enumerate(containers):
        owned = {item["name"] for item in environment}
        container["env"] = [
            *environment,
            *(item for item in container.get("env") or [] if item.get("name") not in owned),
        ]
        if index == 0 and job.gpus_per_replica > 0:
            resources = container.setdefault("resources", {})
            for section in ("requests", "limits"):
                resources.setdefault(section, {})[GPU_RESOURCE] = str(job.gpus_per_replica)
    spec["containers"] = containers
    if extra_tolerations:
        own = list(spec.get("tolerations") or [])
        spec["tolerations"] = own + [dict(t) for t in extra_tolerations if dict(t) not in own]
    spec.setdefault("restartPolicy", "Never")
    spec["hostname"] = name
    spec["subdomain"] = service_name(job.name)
    _wire_dataset_volume(spec, dataset, region)
    if job.placement.mode is PlacementMode.Bind:
        spec["schedulerName"] = SCHEDULER_NAME
        if node is not None:
            spec["nodeName"] = node
    else:
        selector = region_selector or {REGION_LABEL: region}
        spec["affinity"] = _region_affinity(spec.get("affinity"), selector)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": labels,
            "annotations": dict(template_metadata.get("annotations") or {}),
            "ownerReferences": [owner_reference(job_body)],
        },
        "spec": spec,
    }


def _wire_dataset_volume(spec: dict[str, Any], dataset: DatasetSpec | None, region: str) -> None:
    """Mounts the dataset's PVC where the data is local; RemoteAccess reads the endpoint instead."""
    if dataset is None or not dataset.access.pvc_name or not _data_is_local(dataset, region):
        return
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != DATASET_VOLUME]
    volumes.append(
        {
            "name": DATASET_VOLUME,
            "persistentVolumeClaim": {"claimName": dataset.access.pvc_name, "readOnly": True},
        }
    )
    spec["volumes"] = volumes
    for container in spec["containers"]:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != DATASET_VOLUME]
        mounts.append({"name": DATASET_VOLUME, "mountPath": DATASET_MOUNT_PATH, "readOnly": True})
        container["volumeMounts"] = mounts


def _region_affinity(
    existing: Mapping[str, Any] | None, selector: Mapping[str, str]
) -> dict[str, Any]:
    """Adds the region's node selector (its label, or the Region's own nodeSelector)."""
    affinity = copy.deepcopy(dict(existing or {}))
    term = {
        "matchExpressions": [
            {"key": key, "operator": "In", "values": [value]}
            for key, value in sorted(selector.items())
        ]
    }
    node_affinity = affinity.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    # Terms are ORed: the region requirement must be part of every one of them.
    required["nodeSelectorTerms"] = [
        {
            **t,
            "matchExpressions": [*(t.get("matchExpressions") or []), *term["matchExpressions"]],
        }
        for t in terms
    ]
    return affinity


# --- a job placed in a member cluster (api.members) ---------------------------------------------
def hub_labels(job_body: Mapping[str, Any]) -> dict[str, str]:
    """The hub job's namespace, name and uid, on everything the hub makes in a member."""
    metadata = job_body["metadata"]
    return {
        HUB_NAMESPACE_LABEL: metadata["namespace"],
        HUB_JOB_LABEL: metadata["name"],
        HUB_JOB_UID_LABEL: metadata["uid"],
    }


def build_anchor(job: TrainingJobSpec, job_body: Mapping[str, Any]) -> dict[str, Any]:
    """The job's anchor in a member: owner of the gang's pods and Service there, so that the
    member's garbage collector removes them once it is deleted."""
    metadata = job_body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": ANCHOR_KIND,
        "metadata": {
            "name": anchor_name(job.name),
            "namespace": job.namespace,
            "labels": {**job_labels(job), **hub_labels(job_body)},
        },
        "data": {"trainingJob": f"{metadata['namespace']}/{metadata['name']}"},
    }


def for_member(
    body: Mapping[str, Any], job_body: Mapping[str, Any], anchor_uid: str
) -> dict[str, Any]:
    """A pod or Service of `build_pod` / `build_service` as it goes to a member: owned by the
    job's anchor there (the hub's TrainingJob does not exist in the member) and labelled with
    the hub job. No blockOwnerDeletion: it would ask for rights on the anchor's finalizers."""
    adapted = copy.deepcopy(dict(body))
    metadata = adapted["metadata"]
    metadata["labels"] = {**(metadata.get("labels") or {}), **hub_labels(job_body)}
    metadata["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": ANCHOR_KIND,
            "name": anchor_name(job_body["metadata"]["name"]),
            "uid": anchor_uid,
            "controller": True,
        }
    ]
    return adapted
