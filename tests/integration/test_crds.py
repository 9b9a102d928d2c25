"""The CRDs against the real API server: what they reject (naming the field), what they accept
(with defaults), and what `kubectl get` / `kubectl explain` show.

Invalid objects are sent with `--dry-run=server`: the server runs every check (schema, CEL,
strict field validation) but stores nothing, so a case that is wrongly accepted leaves no debris.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster, wait_for_namespace_gone
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

API_VERSION = "tsunagu.io/v1alpha1"
SOME_TIME = "2026-04-01T09:00:00Z"

# DESIGN.md §7, verbatim: the field names in it are part of the contract.
DESIGN_EXAMPLES = """
apiVersion: tsunagu.io/v1alpha1
kind: Region
metadata: {name: fukuoka}
spec:
  prefecture: JP-40
  displayName: Fukuoka DC
  gpuHourPrice: 2.1          # any currency unit, compared across regions only
  carbonIntensity: 420       # gCO2/kWh
  cordoned: false
  links:
    - {to: tokyo, rttMs: 15, bandwidthGbps: 100, kind: APN}
---
apiVersion: tsunagu.io/v1alpha1
kind: Dataset
metadata: {name: claims-2025, namespace: team-a}
spec:
  homeRegion: tokyo
  residency:
    mode: RemoteAccess       # Pinned | RemoteAccess | Replicated
    allowedRegions: []       # RemoteAccess: empty = any region within the job's budgets
    deniedRegions: []
    replicaRegions: []       # Replicated only
  access: {pvcName: claims-2025}   # or {endpoint: "nfs://…"}
  sizeGiB: 800
  classification: personal data
---
apiVersion: tsunagu.io/v1alpha1
kind: TrainingJob
metadata: {name: llm-ft, namespace: team-a}
spec:
  datasetRef: {name: claims-2025}
  replicas: 4
  gpusPerReplica: 8
  gpuProduct: NVIDIA-H100-80GB-HBM3      # optional; matches node label nvidia.com/gpu.product
  placement:
    mode: Bind               # Bind | Delegate
    maxRttMs: 20
    maxThroughputLoss: 0.15
    preferredRegions: []
    excludedRegions: []
    objective: Balanced      # Fastest | Cheapest | Greenest | Balanced
    onLatencyBreach: Keep    # Keep | Requeue
    breachToleranceSeconds: 120
  template: {spec: {containers: [{name: trainer, image: "…"}]}}
"""

DELETE = object()  # marks a field to remove in a table of changes


# --- building objects -------------------------------------------------------------------------


def region(name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Region",
        "metadata": {"name": name},
        "spec": {
            "prefecture": "JP-40",
            "displayName": "Fukuoka DC",
            "gpuHourPrice": 2.1,
            "carbonIntensity": 420,
            "location": {"latitude": 33.6064, "longitude": 130.4181},
            "links": [{"to": "tokyo", "rttMs": 15, "bandwidthGbps": 100, "kind": "APN"}],
        },
    }


def dataset(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "homeRegion": "tokyo",
            "residency": {
                "mode": "RemoteAccess",
                "allowedRegions": ["fukuoka"],
                "deniedRegions": ["osaka"],
            },
            "access": {"pvcName": "claims-2025"},
            "sizeGiB": 800,
            "classification": "personal data",
        },
    }


def training_job(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "datasetRef": {"name": "claims-2025"},
            "replicas": 2,
            "gpusPerReplica": 8,
            "placement": {
                "maxRttMs": 20,
                "maxThroughputLoss": 0.15,
                "preferredRegions": ["fukuoka"],
                "excludedRegions": ["osaka"],
            },
            "dataProfile": {"bytesPerStep": 1 << 28, "stepComputeMilliseconds": 350},
            "template": {"spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]}},
        },
    }


CATALOGUE_REGION = "crd-catalogue"  # only ever sent with --dry-run=server


def base_object(kind: str, namespace: str) -> dict[str, Any]:
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "Region": lambda: region(CATALOGUE_REGION),
        "Dataset": lambda: dataset(namespace, "catalogue"),
        "TrainingJob": lambda: training_job(namespace, "catalogue"),
    }
    return builders[kind]()


def with_changes(document: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `document` with dotted paths (`spec.links.0.rttMs`) set, or removed (DELETE)."""
    result = copy.deepcopy(dict(document))
    for path, value in changes.items():
        *parents, last = path.split(".")
        container: Any = result
        for step in parents:
            container = container[int(step)] if isinstance(container, list) else container[step]
        key: Any = int(last) if isinstance(container, list) else last
        if value is DELETE:
            del container[key]
        else:
            container[key] = copy.deepcopy(value)
    return result


def get_path(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for step in path.split("."):
        value = value[int(step)] if isinstance(value, list) else value[step]
    return value


def create(
    cluster: Cluster, document: Mapping[str, Any], *, dry_run: bool = False
) -> subprocess.CompletedProcess[str]:
    args = ["create", "-f", "-", "-o", "json"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, input=json.dumps(document), check=False)


def patch(
    cluster: Cluster,
    kind: str,
    name: str,
    body: Mapping[str, Any],
    *,
    namespace: str | None = None,
    status: bool = False,
    dry_run: bool = False,
) -> subprocess.CompletedProcess[str]:
    args = ["patch", kind.lower(), name, "--type=merge", "-p", json.dumps(body), "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    if status:
        args.append("--subresource=status")
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, check=False)


def assert_rejected(result: subprocess.CompletedProcess[str], field_path: str, says: str) -> None:
    assert result.returncode != 0, f"accepted, but should name {field_path}:\n{result.stdout}"
    error = result.stderr
    assert "is invalid" in error or "unknown field" in error, f"not a validation error: {error}"
    assert field_path in error, f"the error does not name {field_path}: {error}"
    assert says in error, f"the error does not say {says!r}: {error}"


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": SOME_TIME,
    }


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_namespace(cluster: Cluster) -> Iterator[str]:
    """One namespace for the whole catalogue: a namespace per dry-run case would only cost time."""
    name = f"t-crds-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
    wait_for_namespace_gone(cluster, name)


@dataclass
class RegionsMade:
    """Creates uniquely named Regions (cluster-scoped, so namespaces do not clean them up)."""

    cluster: Cluster
    names: list[str] = field(default_factory=list)

    def make(self, prefix: str = "crdtest") -> dict[str, Any]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        created = create(self.cluster, region(name))
        assert created.returncode == 0, created.stderr
        self.names.append(name)
        document: dict[str, Any] = json.loads(created.stdout)
        return document

    def delete_all(self) -> None:
        for name in self.names:
            self.cluster.kubectl("delete", "region", name, "--ignore-not-found", check=False)


@pytest.fixture
def regions(cluster: Cluster) -> Iterator[RegionsMade]:
    made = RegionsMade(cluster)
    yield made
    made.delete_all()


@pytest.fixture(scope="module")
def existing(cluster: Cluster, shared_namespace: str) -> Iterator[dict[str, str]]:
    """Stored objects with a status, the targets of the update and status-update cases."""
    made = RegionsMade(cluster)
    names = {"Region": made.make("crd-status")["metadata"]["name"]}
    for kind, build in (("Dataset", dataset), ("TrainingJob", training_job)):
        created = create(cluster, build(shared_namespace, "status-target"))
        assert created.returncode == 0, created.stderr
        names[kind] = "status-target"
    placed = patch(
        cluster,
        "TrainingJob",
        names["TrainingJob"],
        {"status": {"region": "tokyo"}},
        namespace=shared_namespace,
        status=True,
    )
    assert placed.returncode == 0, placed.stderr
    yield names
    made.delete_all()


# --- the catalogue of invalid objects ---------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    kind: str
    changes: Mapping[str, Any]
    field_path: str  # must appear in the error text
    says: str = ""  # and so must this, when set


def case(kind: str, changes: Mapping[str, Any], field_path: str, says: str = "", *, id: str) -> Any:
    return pytest.param(Invalid(kind, changes, field_path, says), id=id)


def regions_named(count: int) -> list[str]:
    return [f"r{index}" for index in range(count)]


INVALID_OBJECTS = [
    # Region
    case("Region", {"spec.prefecture": "Tokyo"}, "spec.prefecture", id="region-prefecture-not-iso"),
    case(
        "Region", {"spec.prefecture": "jp-13"}, "spec.prefecture", id="region-prefecture-lowercase"
    ),
    case(
        "Region",
        {"spec.prefecture": DELETE},
        "spec.prefecture",
        "Required value",
        id="region-prefecture-missing",
    ),
    case("Region", {"spec.displayName": "x" * 129}, "spec.displayName", id="region-name-too-long"),
    case("Region", {"spec.gpuHourPrice": -1}, "spec.gpuHourPrice", id="region-price-negative"),
    case("Region", {"spec.carbonIntensity": 1e6}, "spec.carbonIntensity", id="region-carbon-huge"),
    case(
        "Region", {"spec.links.0.rttMs": -1}, "spec.links[0].rttMs", id="region-link-rtt-negative"
    ),
    case(
        "Region",
        {"spec.links.0.kind": "Satellite"},
        "spec.links[0].kind",
        id="region-link-kind-unknown",
    ),
    case(
        "Region", {"spec.links.0.to": "Tokyo DC"}, "spec.links[0].to", id="region-link-to-bad-name"
    ),
    case(
        "Region",
        {"spec.links.0.to": CATALOGUE_REGION},
        "spec.links",
        "cannot declare a link to itself",
        id="region-link-to-itself",
    ),
    case(
        "Region",
        {"spec.links": [{"to": "tokyo", "rttMs": 15}, {"to": "tokyo", "rttMs": 16}]},
        "spec.links[1]",
        "Duplicate value",
        id="region-link-declared-twice",
    ),
    case(
        "Region",
        {"spec.links": [{"to": name, "rttMs": 5} for name in regions_named(65)]},
        "spec.links",
        "Too many",
        id="region-too-many-links",
    ),
    case(
        "Region", {"spec.location.latitude": 91}, "spec.location.latitude", id="region-latitude-91"
    ),
    case("Region", {"spec.nodeSelector": {}}, "spec.nodeSelector", id="region-node-selector-empty"),
    case(
        "Region",
        {"metadata.name": "fukuoka.dc"},
        "metadata.name",
        "should match",
        id="region-name-not-a-dns-label",
    ),
    # Dataset
    case(
        "Dataset",
        {"spec.homeRegion": DELETE},
        "spec.homeRegion",
        "Required value",
        id="dataset-home-region-missing",
    ),
    case("Dataset", {"spec.homeRegion": "Tokyo"}, "spec.homeRegion", id="dataset-home-uppercase"),
    case(
        "Dataset",
        {"spec.residency.mode": "Anywhere"},
        "spec.residency.mode",
        "Unsupported value",
        id="dataset-residency-mode-unknown",
    ),
    case(
        "Dataset",
        {
            "spec.residency": {"mode": "Pinned", "replicaRegions": ["osaka"]},
        },
        "spec.residency.replicaRegions",
        "only be set when mode is Replicated",
        id="dataset-replica-regions-with-pinned",
    ),
    case(
        "Dataset",
        {"spec.residency": {"mode": "Replicated"}},
        "spec.residency.replicaRegions",
        "at least one region",
        id="dataset-replicated-without-replicas",
    ),
    case(
        "Dataset",
        {"spec.residency": {"mode": "Pinned", "allowedRegions": ["fukuoka"]}},
        "spec.residency.allowedRegions",
        "only be set when mode is RemoteAccess",
        id="dataset-allowed-regions-with-pinned",
    ),
    case(
        "Dataset",
        {
            "spec.residency": {
                "mode": "Replicated",
                "replicaRegions": ["osaka"],
                "deniedRegions": ["x"],
            }
        },
        "spec.residency.deniedRegions",
        "only be set when mode is RemoteAccess",
        id="dataset-denied-regions-with-replicated",
    ),
    case(
        "Dataset",
        {"spec.residency.deniedRegions": ["fukuoka"]},
        "spec.residency.deniedRegions",
        "both allowedRegions and deniedRegions",
        id="dataset-allowed-and-denied-overlap",
    ),
    case(
        "Dataset",
        {"spec.residency.deniedRegions": ["tokyo"]},
        "spec.residency.deniedRegions",
        "home region",
        id="dataset-home-region-denied",
    ),
    case(
        "Dataset",
        {"spec.residency.deniedRegions": ["osaka", "osaka"]},
        "spec.residency.deniedRegions[1]",
        "Duplicate value",
        id="dataset-denied-region-twice",
    ),
    case(
        "Dataset",
        {"spec.residency.allowedRegions": regions_named(33)},
        "spec.residency.allowedRegions",
        "Too many",
        id="dataset-too-many-allowed-regions",
    ),
    case(
        "Dataset",
        {"spec.access": {"pvcName": "claims", "endpoint": "nfs://filer/claims"}},
        "spec.access",
        "exactly one of pvcName or endpoint",
        id="dataset-both-pvc-and-endpoint",
    ),
    case(
        "Dataset",
        {"spec.access": {}},
        "spec.access",
        "exactly one of pvcName or endpoint",
        id="dataset-neither-pvc-nor-endpoint",
    ),
    case(
        "Dataset",
        {"spec.access": {"endpoint": "filer/claims"}},
        "spec.access.endpoint",
        id="dataset-endpoint-without-scheme",
    ),
    case(
        "Dataset",
        {"spec.access": {"pvcName": "Claims_2025"}},
        "spec.access.pvcName",
        id="dataset-bad-pvc",
    ),
    case(
        "Dataset",
        {"spec.classification": "x" * 257},
        "spec.classification",
        "Too long",
        id="dataset-classification-too-long",
    ),
    case("Dataset", {"spec.sizeGiB": -1}, "spec.sizeGiB", id="dataset-size-negative"),
    # TrainingJob
    case("TrainingJob", {"spec.replicas": -1}, "spec.replicas", id="job-replicas-negative"),
    case("TrainingJob", {"spec.replicas": 0}, "spec.replicas", id="job-replicas-zero"),
    case(
        "TrainingJob",
        {"spec.template.spec.nodeName": "gpu-osaka-0001"},
        "spec.template.spec.nodeName",
        "must not be set",
        id="job-template-fixes-the-node",
    ),
    case("TrainingJob", {"spec.replicas": 100_000}, "spec.replicas", id="job-replicas-huge"),
    case("TrainingJob", {"spec.replicas": "four"}, "spec.replicas", id="job-replicas-not-a-number"),
    case(
        "TrainingJob",
        {"spec.replicas": 2, "spec.gpusPerReplica": 0},
        "spec.gpusPerReplica",
        "at least 1 when replicas",
        id="job-no-gpus-with-two-replicas",
    ),
    case("TrainingJob", {"spec.gpusPerReplica": 65}, "spec.gpusPerReplica", id="job-gpus-huge"),
    case(
        "TrainingJob",
        {"spec.placement.mode": "Schedule"},
        "spec.placement.mode",
        "Unsupported value",
        id="job-placement-mode-unknown",
    ),
    case(
        "TrainingJob",
        {"spec.placement.objective": "Cheap"},
        "spec.placement.objective",
        "Unsupported value",
        id="job-objective-unknown",
    ),
    case(
        "TrainingJob",
        {"spec.placement.onLatencyBreach": "Migrate"},
        "spec.placement.onLatencyBreach",
        "Unsupported value",
        id="job-breach-action-unknown",
    ),
    case(
        "TrainingJob",
        {"spec.placement.maxThroughputLoss": 1.5},
        "spec.placement.maxThroughputLoss",
        id="job-loss-budget-above-one",
    ),
    case(
        "TrainingJob",
        {"spec.placement.maxRttMs": -1},
        "spec.placement.maxRttMs",
        id="job-rtt-negative",
    ),
    case(
        "TrainingJob",
        {"spec.placement.breachToleranceSeconds": -5},
        "spec.placement.breachToleranceSeconds",
        id="job-breach-tolerance-negative",
    ),
    case(
        "TrainingJob",
        {"spec.placement.preferredRegions": ["osaka"]},
        "spec.placement.excludedRegions",
        "both preferredRegions and excludedRegions",
        id="job-preferred-region-excluded",
    ),
    case(
        "TrainingJob",
        {"spec.placement.excludedRegions": regions_named(33)},
        "spec.placement.excludedRegions",
        "Too many",
        id="job-too-many-excluded-regions",
    ),
    case(
        "TrainingJob",
        {"spec.template": DELETE},
        "spec.template",
        "Required value",
        id="job-template-missing",
    ),
    case(
        "TrainingJob",
        {"spec.template": {"spec": {}}},
        "spec.template.spec.containers",
        "Required value",
        id="job-template-without-containers",
    ),
    case(
        "TrainingJob", {"spec.backoffLimit": 101}, "spec.backoffLimit", id="job-backoff-limit-101"
    ),
    case("TrainingJob", {"spec.priority": 2_000_000_000}, "spec.priority", id="job-priority-huge"),
    case(
        "TrainingJob",
        {"spec.dataProfile.requestConcurrency": 0},
        "spec.dataProfile.requestConcurrency",
        id="job-request-concurrency-zero",
    ),
    case(
        "TrainingJob",
        {"spec.dataProfile.bytesPerStep": -1},
        "spec.dataProfile.bytesPerStep",
        id="job-bytes-per-step-negative",
    ),
    case(
        "TrainingJob",
        {"spec.dataProfile": {"bytesPerStep": 1024}},
        "spec.dataProfile.stepComputeMilliseconds",
        "Required value",
        id="job-step-compute-missing",
    ),
    case(
        "TrainingJob",
        {"spec.gpuProduct": "NVIDIA H100"},
        "spec.gpuProduct",
        id="job-gpu-product-space",
    ),
    case(
        "TrainingJob",
        {"spec.datasetRef.name": "Claims 2025"},
        "spec.datasetRef.name",
        id="job-dataset-ref-bad-name",
    ),
    case(
        "TrainingJob",
        {"metadata.name": "a" * 53},
        "metadata.name",
        "Too long",
        id="job-name-too-long-for-its-pods",
    ),
    case(
        "TrainingJob",
        {"spec.replica": 2},
        "spec.replica",
        "unknown field",
        id="job-misspelt-field",
    ),
]


@pytest.mark.parametrize("invalid", INVALID_OBJECTS)
def test_invalid_object_is_rejected_naming_the_field(
    cluster: Cluster, shared_namespace: str, invalid: Invalid
) -> None:
    document = with_changes(base_object(invalid.kind, shared_namespace), invalid.changes)
    assert_rejected(create(cluster, document, dry_run=True), invalid.field_path, invalid.says)


@pytest.mark.parametrize("kind", ["Region", "Dataset", "TrainingJob"])
def test_the_base_objects_of_the_catalogue_are_valid(
    cluster: Cluster, shared_namespace: str, kind: str
) -> None:
    """Each case above changes one thing in a valid object, so it fails for that one reason."""
    result = create(cluster, base_object(kind, shared_namespace), dry_run=True)
    assert result.returncode == 0, result.stderr


# --- updates that must be refused -------------------------------------------------------------


@dataclass(frozen=True)
class InvalidUpdate:
    kind: str
    body: Mapping[str, Any]
    status: bool  # through the status subresource
    field_path: str
    says: str = ""


def update(
    kind: str, body: Mapping[str, Any], field_path: str, says: str = "", *, status: bool, id: str
) -> Any:
    return pytest.param(InvalidUpdate(kind, body, status, field_path, says), id=id)


INVALID_UPDATES = [
    update(
        "TrainingJob",
        {"status": {"region": "osaka"}},
        "status.region",
        "cannot change from one region to another",
        status=True,
        id="job-status-region-switched",
    ),
    update(
        "TrainingJob",
        {"status": {"conditions": [condition("Scheduled", "Maybe", "Placed")]}},
        "status.conditions[0].status",
        "Unsupported value",
        status=True,
        id="job-condition-status-maybe",
    ),
    update(
        "TrainingJob",
        {"status": {"conditions": [condition("Scheduled", "True", "placed by hand")]}},
        "status.conditions[0].reason",
        status=True,
        id="job-condition-reason-not-camel-case",
    ),
    update(
        "TrainingJob",
        {
            "status": {
                "placement": {
                    "alternatives": [
                        {"region": name, "verdict": "Rejected", "reason": "LatencyBudget"}
                        for name in regions_named(9)
                    ]
                }
            }
        },
        "status.placement.alternatives",
        "Too many",
        status=True,
        id="job-nine-alternatives",
    ),
    update(
        "TrainingJob",
        {
            "status": {
                "placement": {
                    "alternatives": [{"region": "osaka", "verdict": "Maybe", "reason": "Placed"}]
                }
            }
        },
        "status.placement.alternatives[0].verdict",
        "Unsupported value",
        status=True,
        id="job-alternative-verdict-unknown",
    ),
    update(
        "TrainingJob",
        {"status": {"placement": {"predictedThroughputLoss": 2}}},
        "status.placement.predictedThroughputLoss",
        status=True,
        id="job-predicted-loss-above-one",
    ),
    update(
        "TrainingJob",
        {"status": {"placement": {"decidedAt": "yesterday"}}},
        "status.placement.decidedAt",
        status=True,
        id="job-decided-at-not-a-time",
    ),
    update(
        "TrainingJob",
        {"status": {"runningReplicas": -1}},
        "status.runningReplicas",
        status=True,
        id="job-running-replicas-negative",
    ),
    update(
        "TrainingJob",
        {"spec": {"datasetRef": {"name": "another"}}},
        "spec.datasetRef",
        "immutable",
        status=False,
        id="job-dataset-ref-changed",
    ),
    update(
        "TrainingJob",
        {"spec": {"datasetRef": None}},
        "spec.datasetRef",
        "cannot be added or removed",
        status=False,
        id="job-dataset-ref-removed",
    ),
    update(
        "Region",
        {"status": {"gpus": "lots"}},
        "status.gpus",
        status=True,
        id="region-gpus-display-malformed",
    ),
    update(
        "Region",
        {"status": {"links": [{"to": "tokyo", "rttMs": 15, "source": "Guess"}]}},
        "status.links[0].source",
        "Unsupported value",
        status=True,
        id="region-link-source-unknown",
    ),
    update(
        "Region",
        {"status": {"links": [{"to": "tokyo", "rttMs": -3, "source": "Prometheus"}]}},
        "status.links[0].rttMs",
        status=True,
        id="region-measured-rtt-negative",
    ),
    update(
        "Dataset",
        {"status": {"conditions": [condition("Not Valid", "True", "Ready")]}},
        "status.conditions[0].type",
        status=True,
        id="dataset-condition-type-with-space",
    ),
]


@pytest.mark.parametrize("invalid", INVALID_UPDATES)
def test_invalid_update_is_rejected_naming_the_field(
    cluster: Cluster, shared_namespace: str, existing: dict[str, str], invalid: InvalidUpdate
) -> None:
    namespace = None if invalid.kind == "Region" else shared_namespace
    result = patch(
        cluster,
        invalid.kind,
        existing[invalid.kind],
        invalid.body,
        namespace=namespace,
        status=invalid.status,
        dry_run=True,
    )
    assert_rejected(result, invalid.field_path, invalid.says)


def test_status_region_is_cleared_before_it_moves(cluster: Cluster, namespace: str) -> None:
    created = create(cluster, training_job(namespace, "requeued"))
    assert created.returncode == 0, created.stderr

    def set_region(value: str | None) -> subprocess.CompletedProcess[str]:
        body = {"status": {"region": value}}
        return patch(cluster, "TrainingJob", "requeued", body, namespace=namespace, status=True)

    first = set_region("tokyo")
    assert first.returncode == 0, first.stderr
    assert_rejected(set_region("osaka"), "status.region", "clear it (requeue)")
    cleared = set_region(None)
    assert cleared.returncode == 0, cleared.stderr
    assert "region" not in json.loads(cleared.stdout)["status"]
    moved = set_region("osaka")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["status"]["region"] == "osaka"


def test_spec_updates_do_not_touch_status(cluster: Cluster, namespace: str) -> None:
    """With the status subresource, a spec write cannot set status (the operator owns it)."""
    created = create(cluster, training_job(namespace, "owned"))
    assert created.returncode == 0, created.stderr
    body = {"spec": {"priority": 5}, "status": {"region": "tokyo"}}
    result = patch(cluster, "TrainingJob", "owned", body, namespace=namespace)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert stored["spec"]["priority"] == 5
    assert "region" not in stored.get("status", {})


# --- valid objects ----------------------------------------------------------------------------


def design_example(kind: str) -> dict[str, Any]:
    documents = [document for document in yaml.safe_load_all(DESIGN_EXAMPLES) if document]
    return next(document for document in documents if document["kind"] == kind)


@dataclass(frozen=True)
class Valid:
    document: Callable[[str], dict[str, Any]]  # namespace → object
    expected: Mapping[str, Any]  # dotted path → value after defaulting


def in_namespace(document: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """The object moved into the test's namespace; a Region (cluster-scoped) gets a unique name
    instead, since a dry-run create of a name that exists (the cluster's own fukuoka) fails."""

    def build(namespace: str) -> dict[str, Any]:
        result = copy.deepcopy(document)
        if result["kind"] == "Region":
            result["metadata"]["name"] = f"crd-{uuid.uuid4().hex[:8]}"
        else:
            result["metadata"]["namespace"] = namespace
        return result

    return build


MINIMAL_TEMPLATE = {"spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]}}

VALID_OBJECTS = [
    pytest.param(
        Valid(
            in_namespace(design_example("Region")),
            {"spec.links.0.kind": "APN", "spec.cordoned": False, "spec.prefecture": "JP-40"},
        ),
        id="design-region-fukuoka",
    ),
    pytest.param(
        Valid(
            in_namespace(design_example("Dataset")),
            {"spec.residency.mode": "RemoteAccess", "spec.access.pvcName": "claims-2025"},
        ),
        id="design-dataset-claims",
    ),
    pytest.param(
        Valid(
            in_namespace(design_example("TrainingJob")),
            {"spec.replicas": 4, "spec.priority": 0, "spec.backoffLimit": 3},
        ),
        id="design-training-job-llm-ft",
    ),
    pytest.param(
        Valid(
            in_namespace(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Region",
                    "metadata": {"name": "crd-minimal-region"},
                    "spec": {
                        "prefecture": "JP-01",
                        "links": [{"to": "tokyo", "rttMs": 12}],
                        "nodeSelector": {"example.com/site": "sapporo-1"},
                    },
                }
            ),
            {"spec.cordoned": False, "spec.links.0.kind": "Internet"},
        ),
        id="minimal-region-gets-defaults",
    ),
    pytest.param(
        Valid(
            in_namespace(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Dataset",
                    "metadata": {"name": "pinned-by-default"},
                    "spec": {"homeRegion": "tokyo"},
                }
            ),
            {"spec.residency.mode": "Pinned"},
        ),
        id="dataset-residency-defaults-to-pinned",
    ),
    pytest.param(
        Valid(
            in_namespace(
                {
                    "apiVersion": API_VERSION,
                    "kind": "Dataset",
                    "metadata": {"name": "web-crawl"},
                    "spec": {
                        "homeRegion": "tokyo",
                        "residency": {"mode": "Replicated", "replicaRegions": ["osaka", "fukuoka"]},
                        "access": {"endpoint": "s3://crawl/2025/"},
                    },
                }
            ),
            {"spec.residency.replicaRegions": ["osaka", "fukuoka"]},
        ),
        id="dataset-replicated-with-endpoint",
    ),
    pytest.param(
        Valid(
            in_namespace(
                {
                    "apiVersion": API_VERSION,
                    "kind": "TrainingJob",
                    "metadata": {"name": "minimal"},
                    "spec": {"template": MINIMAL_TEMPLATE},
                }
            ),
            {
                "spec.replicas": 1,
                "spec.gpusPerReplica": 1,
                "spec.priority": 0,
                "spec.backoffLimit": 3,
                "spec.placement.mode": "Bind",
                "spec.placement.objective": "Balanced",
                "spec.placement.onLatencyBreach": "Keep",
                "spec.placement.breachToleranceSeconds": 120,
            },
        ),
        id="minimal-training-job-gets-defaults",
    ),
    pytest.param(
        Valid(
            in_namespace(
                {
                    "apiVersion": API_VERSION,
                    "kind": "TrainingJob",
                    "metadata": {"name": "profiled"},
                    "spec": {
                        "dataProfile": {"bytesPerStep": 0, "stepComputeMilliseconds": 1},
                        "template": MINIMAL_TEMPLATE,
                    },
                }
            ),
            {
                "spec.dataProfile.requestsPerStep": 1,
                "spec.dataProfile.requestConcurrency": 1,
                "spec.dataProfile.prefetchDepth": 0,
            },
        ),
        id="data-profile-gets-defaults",
    ),
]


@pytest.mark.parametrize("valid", VALID_OBJECTS)
def test_valid_object_is_accepted_with_defaults(
    cluster: Cluster, shared_namespace: str, valid: Valid
) -> None:
    # Server-side dry run: full validation and defaulting, and nothing to clean up.
    result = create(cluster, valid.document(shared_namespace), dry_run=True)
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    for path, value in valid.expected.items():
        assert get_path(stored, path) == value, path


# --- what people see --------------------------------------------------------------------------


def table(output: str) -> list[dict[str, str]]:
    """Rows of `kubectl get` output as column → value (our values never contain spaces)."""
    header, *rows = output.strip().splitlines()
    names = header.split()
    return [dict(zip(names, row.split(), strict=True)) for row in rows]


def test_get_trainingjob_shows_where_it_went_and_why(cluster: Cluster, namespace: str) -> None:
    created = create(cluster, training_job(namespace, "llm-ft"))
    assert created.returncode == 0, created.stderr
    status = {
        "region": "fukuoka",
        "cluster": "fukuoka-cloud",
        "state": "Running",
        "conditions": [condition("Scheduled", "True", "Placed", "fukuoka: 15 ms to tokyo")],
        "placement": {
            "region": "fukuoka",
            "rttMs": 15,
            "predictedThroughputLoss": 0.12,
            "score": 0.8,
            "decidedAt": SOME_TIME,
            "alternatives": [
                {"region": "tokyo", "verdict": "Rejected", "reason": "InsufficientCapacity"},
                {"region": "osaka", "verdict": "Rejected", "reason": "RegionExcluded"},
            ],
        },
        "runningReplicas": 2,
        "latency": {"rttMs": 16, "observedAt": SOME_TIME},
    }
    patched = patch(
        cluster, "TrainingJob", "llm-ft", {"status": status}, namespace=namespace, status=True
    )
    assert patched.returncode == 0, patched.stderr

    (row,) = table(cluster.kubectl("get", "tj", "-n", namespace).stdout)
    assert list(row) == [
        "NAME", "REGION", "STATE", "SCHEDULED", "RTT-MS", "PREDICTED-LOSS", "AGE"
    ]  # fmt: skip
    assert (
        row["REGION"],
        row["STATE"],
        row["SCHEDULED"],
        row["RTT-MS"],
        row["PREDICTED-LOSS"],
    ) == (
        "fukuoka",
        "Running",
        "Placed",
        "15",
        "0.12",
    )
    (wide,) = table(cluster.kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout)
    assert (wide["CLUSTER"], wide["RUNNING"], wide["LIVE-RTT-MS"], wide["DATASET"]) == (
        "fukuoka-cloud", "2", "16", "claims-2025",
    )  # fmt: skip


def test_get_region_and_dataset_show_their_columns(
    cluster: Cluster, namespace: str, regions: RegionsMade
) -> None:
    name = regions.make()["metadata"]["name"]
    patched = patch(cluster, "Region", name, {"status": {"gpus": "24/64"}}, status=True)
    assert patched.returncode == 0, patched.stderr
    (region_row,) = table(cluster.kubectl("get", "rgn", name).stdout)
    assert list(region_row) == ["NAME", "PREFECTURE", "GPUS", "CORDONED", "AGE"]
    assert (region_row["PREFECTURE"], region_row["GPUS"], region_row["CORDONED"]) == (
        "JP-40",
        "24/64",
        "false",
    )

    created = create(cluster, dataset(namespace, "claims-2025"))
    assert created.returncode == 0, created.stderr
    (dataset_row,) = table(cluster.kubectl("get", "dset", "-n", namespace).stdout)
    assert list(dataset_row) == ["NAME", "HOME", "RESIDENCY", "AGE"]
    assert (dataset_row["HOME"], dataset_row["RESIDENCY"]) == ("tokyo", "RemoteAccess")


def test_get_tsunagu_lists_all_three_kinds(
    cluster: Cluster, namespace: str, regions: RegionsMade
) -> None:
    region_name = regions.make()["metadata"]["name"]
    for document in (dataset(namespace, "claims-2025"), training_job(namespace, "llm-ft")):
        created = create(cluster, document)
        assert created.returncode == 0, created.stderr
    expected = {
        f"region.tsunagu.io/{region_name}",
        "dataset.tsunagu.io/claims-2025",
        "trainingjob.tsunagu.io/llm-ft",
    }

    def listed() -> bool:
        result = cluster.kubectl("get", "tsunagu", "-n", namespace, "-o", "name", check=False)
        return expected <= set(result.stdout.split())

    wait_until(listed, timeout=30, message="kubectl get tsunagu to list a region, dataset and job")


EXPLAINED = [
    pytest.param(
        "trainingjob.spec.placement",
        ("maxRttMs", "Hard budget", "onLatencyBreach", "Default Bind"),
        id="trainingjob-placement",
    ),
    pytest.param(
        "dataset.spec.residency",
        ("Defaults to mode Pinned", "replicaRegions"),
        id="dataset-residency",
    ),
    pytest.param("region.spec.links", ("rttMs", "both ways", "bandwidthGbps"), id="region-links"),
    pytest.param("trainingjob.status.placement", ("alternatives", "why"), id="trainingjob-status"),
    pytest.param(
        "trainingjob.spec.placement.onClusterUnreachable",
        ("second time", "clusterUnreachableGraceSeconds"),
        id="trainingjob-unreachable-member",
    ),
]


@pytest.mark.parametrize(("field_path", "phrases"), EXPLAINED)
def test_kubectl_explain_teaches_the_fields(
    cluster: Cluster, field_path: str, phrases: tuple[str, ...]
) -> None:
    def explained() -> str:
        # The OpenAPI document of a new CRD is published a moment after it is Established.
        result = cluster.kubectl("explain", field_path, check=False)
        return result.stdout if result.returncode == 0 else ""

    text = " ".join(
        wait_until(explained, timeout=60, message=f"kubectl explain {field_path}").split()
    )
    for phrase in phrases:
        assert phrase in text, f"kubectl explain {field_path} does not mention {phrase!r}"
