"""Parsing of Region, Dataset and TrainingJob dicts: values, defaults and errors naming fields."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from tsunagu.api.parse import SpecError, parse_dataset, parse_region, parse_training_job
from tsunagu.api.types import (
    BreachAction,
    DataProfile,
    GeoPoint,
    LinkKind,
    Objective,
    PlacementMode,
    ResidencyMode,
    UnreachableAction,
)

REGION: dict[str, Any] = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "Region",
    "metadata": {"name": "fukuoka"},
    "spec": {
        "prefecture": "JP-40",
        "displayName": "Fukuoka DC",
        "gpuHourPrice": 2.1,
        "carbonIntensity": 420,
        "cordoned": False,
        "links": [{"to": "tokyo", "rttMs": 15, "bandwidthGbps": 100, "kind": "APN"}],
    },
}

DATASET: dict[str, Any] = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "Dataset",
    "metadata": {"name": "claims-2025", "namespace": "team-a"},
    "spec": {
        "homeRegion": "tokyo",
        "residency": {"mode": "RemoteAccess", "allowedRegions": [], "deniedRegions": []},
        "access": {"pvcName": "claims-2025"},
        "sizeGiB": 800,
        "classification": "personal data",
    },
}

JOB: dict[str, Any] = {
    "apiVersion": "tsunagu.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {
        "name": "llm-ft",
        "namespace": "team-a",
        "creationTimestamp": "2025-04-01T09:00:00Z",
    },
    "spec": {
        "datasetRef": {"name": "claims-2025"},
        "replicas": 4,
        "gpusPerReplica": 8,
        "gpuProduct": "NVIDIA-H100-80GB-HBM3",
        "placement": {
            "mode": "Delegate",
            "maxRttMs": 20,
            "maxThroughputLoss": 0.15,
            "preferredRegions": ["fukuoka"],
            "excludedRegions": ["osaka"],
            "objective": "Greenest",
            "onLatencyBreach": "Requeue",
            "breachToleranceSeconds": 60,
        },
        "dataProfile": {
            "bytesPerStep": 1_000_000,
            "requestsPerStep": 8,
            "requestConcurrency": 4,
            "stepComputeMilliseconds": 250,
            "prefetchDepth": 2,
        },
        "priority": 5,
        "backoffLimit": 1,
        "template": {"spec": {"containers": [{"name": "trainer", "image": "x"}]}},
    },
}


def with_change(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of obj with the dotted path set to value (or removed when value is ...)."""
    changed = copy.deepcopy(obj)
    *parents, last = path.split(".")
    target = changed
    for key in parents:
        target = target.setdefault(key, {})
    if value is ...:
        target.pop(last, None)
    else:
        target[last] = value
    return changed


def test_region_example_parses() -> None:
    region = parse_region(REGION)
    assert region.name == "fukuoka"
    assert region.prefecture == "JP-40"
    assert region.display_name == "Fukuoka DC"
    assert region.gpu_hour_price == pytest.approx(2.1)
    assert region.carbon_intensity == 420
    assert not region.cordoned
    assert region.links[0].to == "tokyo"
    assert region.links[0].rtt_ms == 15
    assert region.links[0].bandwidth_gbps == 100
    assert region.links[0].kind is LinkKind.APN
    assert region.location is None
    assert region.node_selector is None


def test_region_defaults_and_optional_fields() -> None:
    region = parse_region(
        {
            "kind": "Region",
            "metadata": {"name": "sapporo"},
            "spec": {
                "links": [{"to": "tokyo", "rttMs": 18}],
                "location": {"latitude": 43.06, "longitude": 141.35},
                "nodeSelector": {"site": "spr1"},
            },
        }
    )
    assert region.display_name == "sapporo"
    assert region.gpu_hour_price == 0
    assert region.links[0].kind is LinkKind.Internet
    assert region.links[0].bandwidth_gbps is None
    assert region.location == GeoPoint(43.06, 141.35)
    assert region.node_selector == (("site", "spr1"),)


def test_dataset_example_parses() -> None:
    dataset = parse_dataset(DATASET)
    assert dataset.key == ("team-a", "claims-2025")
    assert dataset.home_region == "tokyo"
    assert dataset.residency.mode is ResidencyMode.RemoteAccess
    assert dataset.access.pvc_name == "claims-2025"
    assert dataset.size_gib == 800
    assert dataset.classification == "personal data"


def test_dataset_defaults_to_pinned_in_default_namespace() -> None:
    dataset = parse_dataset({"metadata": {"name": "d"}, "spec": {"homeRegion": "tokyo"}})
    assert dataset.namespace == "default"
    assert dataset.residency.mode is ResidencyMode.Pinned
    assert dataset.access.pvc_name is None
    assert dataset.access.endpoint is None


def test_training_job_example_parses() -> None:
    job = parse_training_job(JOB)
    assert job.key == ("team-a", "llm-ft")
    assert job.dataset_ref == "claims-2025"
    assert (job.replicas, job.gpus_per_replica, job.total_gpus) == (4, 8, 32)
    assert job.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert job.placement.mode is PlacementMode.Delegate
    assert job.placement.max_rtt_ms == 20
    assert job.placement.max_throughput_loss == pytest.approx(0.15)
    assert job.placement.preferred_regions == ("fukuoka",)
    assert job.placement.excluded_regions == ("osaka",)
    assert job.placement.objective is Objective.Greenest
    assert job.placement.on_latency_breach is BreachAction.Requeue
    assert job.placement.breach_tolerance_seconds == 60
    assert job.data_profile == DataProfile(1_000_000, 8, 4, 0.25, 2)
    assert (job.priority, job.backoff_limit) == (5, 1)
    expected = dt.datetime(2025, 4, 1, 9, tzinfo=dt.UTC).timestamp()
    assert job.created_at == expected


def test_training_job_defaults() -> None:
    job = parse_training_job({"metadata": {"name": "j"}, "spec": {}})
    assert job.namespace == "default"
    assert job.dataset_ref is None
    assert (job.replicas, job.gpus_per_replica) == (1, 1)
    assert job.placement.mode is PlacementMode.Bind
    assert job.placement.max_rtt_ms is None
    assert job.placement.max_throughput_loss is None
    assert job.placement.objective is Objective.Balanced
    assert job.placement.on_latency_breach is BreachAction.Keep
    assert job.placement.breach_tolerance_seconds == 120
    assert job.data_profile is None
    assert (job.priority, job.backoff_limit, job.created_at) == (0, 3, 0.0)


def test_creation_timestamp_already_decoded_by_yaml() -> None:
    moment = dt.datetime(2025, 4, 1, 9, 0, 0)  # naive, as PyYAML returns a trailing Z
    job = parse_training_job(with_change(JOB, "metadata.creationTimestamp", moment))
    assert job.created_at == moment.replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("parse", "obj", "message"),
    [
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.replicas", -1),
            "TrainingJob team-a/llm-ft: spec.replicas: must be an integer ≥ 1",
            id="job-negative-replicas",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.replicas", "four"),
            "TrainingJob team-a/llm-ft: spec.replicas: must be an integer ≥ 1",
            id="job-replicas-string",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.replicas", True),
            "TrainingJob team-a/llm-ft: spec.replicas: must be an integer ≥ 1",
            id="job-replicas-bool",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.gpusPerReplica", 0),
            "TrainingJob team-a/llm-ft: spec.gpusPerReplica: must be ≥ 1 when replicas > 0",
            id="job-zero-gpus",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.placement.maxThroughputLoss", 1.5),
            "TrainingJob team-a/llm-ft: spec.placement.maxThroughputLoss: "
            "must be a number ≥ 0 and ≤ 1",
            id="job-loss-above-one",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.placement.objective", "Fast"),
            "TrainingJob team-a/llm-ft: spec.placement.objective: must be one of "
            "Fastest, Cheapest, Greenest, Balanced (got 'Fast')",
            id="job-unknown-objective",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.placement.excludedRegions", "osaka"),
            "TrainingJob team-a/llm-ft: spec.placement.excludedRegions: must be a list of strings",
            id="job-excluded-not-list",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.datasetRef", {}),
            "TrainingJob team-a/llm-ft: spec.datasetRef.name: is required",
            id="job-dataset-ref-without-name",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec.dataProfile.stepComputeMilliseconds", ...),
            "TrainingJob team-a/llm-ft: spec.dataProfile.stepComputeMilliseconds: is required",
            id="job-profile-missing-step-time",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "metadata.creationTimestamp", "yesterday"),
            "TrainingJob team-a/llm-ft: metadata.creationTimestamp: must be an RFC 3339 time",
            id="job-bad-timestamp",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "metadata.name", ...),
            "TrainingJob <unnamed>: metadata.name: is required",
            id="job-without-name",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "spec", ...),
            "TrainingJob team-a/llm-ft: spec: is required",
            id="job-without-spec",
        ),
        pytest.param(
            parse_training_job,
            with_change(JOB, "kind", "Dataset"),
            "TrainingJob team-a/llm-ft: kind: must be TrainingJob (got 'Dataset')",
            id="job-wrong-kind",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.homeRegion", ...),
            "Dataset team-a/claims-2025: spec.homeRegion: is required",
            id="dataset-without-home",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.residency.replicaRegions", ["osaka"]),
            "Dataset team-a/claims-2025: spec.residency.replicaRegions: "
            "may only be set when mode is Replicated",
            id="dataset-replicas-without-replicated",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.residency", {"mode": "Replicated"}),
            "Dataset team-a/claims-2025: spec.residency.replicaRegions: "
            "mode Replicated needs at least one region",
            id="dataset-replicated-without-replicas",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.residency.deniedRegions", ["tokyo"]),
            "Dataset team-a/claims-2025: spec.residency.deniedRegions: "
            "cannot hold the home region tokyo: it is always allowed",
            id="dataset-denies-home",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.residency.mode", "Shared"),
            "Dataset team-a/claims-2025: spec.residency.mode: must be one of "
            "Pinned, RemoteAccess, Replicated (got 'Shared')",
            id="dataset-unknown-mode",
        ),
        pytest.param(
            parse_dataset,
            with_change(DATASET, "spec.access", {"pvcName": "a", "endpoint": "nfs://x"}),
            "Dataset team-a/claims-2025: spec.access.pvcName: "
            "exactly one of pvcName or endpoint must be set",
            id="dataset-two-access-paths",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.gpuHourPrice", -1),
            "Region fukuoka: spec.gpuHourPrice: must be a number ≥ 0",
            id="region-negative-price",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.cordoned", "no"),
            "Region fukuoka: spec.cordoned: must be true or false",
            id="region-cordoned-string",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.links", [{"to": "tokyo"}]),
            "Region fukuoka: spec.links[0].rttMs: is required",
            id="region-link-without-rtt",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.links", [{"to": "fukuoka", "rttMs": 1}]),
            "Region fukuoka: spec.links[0].to: must name another region, not this one",
            id="region-link-to-itself",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.links", ["tokyo"]),
            "Region fukuoka: spec.links[0]: must be a map",
            id="region-link-not-map",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.location", {"latitude": 95, "longitude": 0}),
            "Region fukuoka: spec.location.latitude: must be a number ≥ -90 and ≤ 90",
            id="region-latitude-out-of-range",
        ),
        pytest.param(
            parse_region,
            with_change(REGION, "spec.nodeSelector", {"zone": 3}),
            "Region fukuoka: spec.nodeSelector.zone: must be a string",
            id="region-selector-not-string",
        ),
        pytest.param(
            parse_region,
            ["not", "a", "map"],
            "Region <unnamed>: (object): must be a map",
            id="region-not-a-map",
        ),
    ],
)
def test_bad_objects_name_object_and_field(parse: Any, obj: Any, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(obj)
    assert str(raised.value) == message
    field = message.split(": ")[1]
    assert raised.value.field == field


def test_a_job_waits_for_an_unreachable_member_unless_it_asks_to_be_placed_again() -> None:
    default = parse_training_job(JOB).placement
    assert default.on_cluster_unreachable is UnreachableAction.Wait
    assert default.cluster_unreachable_grace_seconds == 600
    policy = parse_training_job(
        with_change(
            with_change(JOB, "spec.placement.onClusterUnreachable", "Requeue"),
            "spec.placement.clusterUnreachableGraceSeconds", 120,
        )
    ).placement  # fmt: skip
    assert policy.on_cluster_unreachable is UnreachableAction.Requeue
    assert policy.cluster_unreachable_grace_seconds == 120
    with pytest.raises(SpecError, match=r"spec\.placement\.onClusterUnreachable"):
        parse_training_job(with_change(JOB, "spec.placement.onClusterUnreachable", "x"))
    with pytest.raises(SpecError, match=r"spec\.placement\.clusterUnreachableGraceSeconds"):
        parse_training_job(with_change(JOB, "spec.placement.clusterUnreachableGraceSeconds", -1))
