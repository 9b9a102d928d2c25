"""The throughput model: how much training throughput a given RTT to the data costs (DESIGN.md §3).

Losses are fractions in [0, 1): 0.12 means the job runs at 88% of the speed it would have next
to its data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tsunagu.api.profiles import ModelKind, ProfileModel
from tsunagu.api.types import DataProfile, GeoPoint

REFERENCE_RTT_MS = 15.0
REFERENCE_LOSS = 0.12
# loss(rtt) = 1 - 1/(1 + k·rtt) with loss(15 ms) = 0.12 gives k = 0.12 / (0.88 · 15) = 1/110.
REFERENCE_K = REFERENCE_LOSS / ((1.0 - REFERENCE_LOSS) * REFERENCE_RTT_MS)

# Light in fibre covers ~200 km per ms, so a round trip costs at least ~10 µs per km.
FIBRE_FLOOR_MS_PER_KM = 0.01
EARTH_RADIUS_KM = 6371.0088


def reference_loss(rtt_ms: float) -> float:
    """Loss on the reference curve calibrated on the 2025 Tokyo–Fukuoka pre-test."""
    if rtt_ms <= 0:
        return 0.0
    return 1.0 - 1.0 / (1.0 + REFERENCE_K * rtt_ms)


def data_stall_loss(profile: DataProfile, rtt_ms: float, bandwidth_gbps: float | None) -> float:
    """Loss of a job that reads its data over the link as its dataProfile describes.

    Per step, fetching costs ⌈requests / concurrency⌉ round trips plus the bytes over the link;
    prefetching overlaps up to prefetchDepth steps of compute with it, and what is not hidden
    stalls the step. `bandwidth_gbps` None means the link does not limit transfer (local reads).
    """
    round_trips = math.ceil(profile.requests_per_step / profile.request_concurrency)
    fetch_seconds = round_trips * max(rtt_ms, 0.0) / 1000.0
    if bandwidth_gbps is not None and profile.bytes_per_step > 0:
        fetch_seconds += profile.bytes_per_step * 8 / (bandwidth_gbps * 1e9)
    hidden_seconds = profile.prefetch_depth * profile.step_compute_seconds
    stall_seconds = max(0.0, fetch_seconds - hidden_seconds)
    return stall_seconds / (profile.step_compute_seconds + stall_seconds)


def curve_loss(k: float, hidden_rtt_ms: float, rtt_ms: float) -> float:
    """Loss on a learned curve: `x / (1 + x)` with `x = k · max(0, rtt − hidden)`.

    With `hidden_rtt_ms = 0` and `k = REFERENCE_K` this is the reference curve.
    """
    extra = k * max(0.0, rtt_ms - hidden_rtt_ms)
    return extra / (1.0 + extra)


def stall_parameters(profile: DataProfile, bandwidth_gbps: float | None) -> tuple[float, float]:
    """The data-stall model of a profile as the learned curve's (k, hidden RTT in ms).

    Dividing the stall by the step's compute gives `x = k · (rtt − hidden)` with
    `k = ⌈requests / concurrency⌉ / compute_ms` and `hidden` the RTT that prefetching covers
    after the transfer time; these two are all that throughput at one bandwidth reveals.
    """
    round_trips = math.ceil(profile.requests_per_step / profile.request_concurrency)
    compute_ms = profile.step_compute_seconds * 1000.0
    transfer_ms = 0.0
    if bandwidth_gbps is not None and profile.bytes_per_step > 0:
        transfer_ms = profile.bytes_per_step * 8 / (bandwidth_gbps * 1e9) * 1000.0
    hidden_ms = (profile.prefetch_depth * compute_ms - transfer_ms) / round_trips
    return round_trips / compute_ms, hidden_ms


@dataclass(frozen=True, slots=True)
class FittedModel:
    """A model learned for one workload class from its jobs' throughput (placement/calibration)."""

    workload_class: str
    model: ProfileModel
    samples: int  # usable samples away from the data that the fit rests on
    rms_error: float  # of the predicted loss over those samples
    confidence: float  # 0..1, for people; `trusted` is what the engine acts on
    trusted: bool
    # The namespace of the cluster-wide default profile it comes from; None: the job's own
    # namespace's profile (see `calibration.with_defaults`).
    default_from: str | None = None

    def loss(self, rtt_ms: float) -> float:
        return curve_loss(self.model.k, self.model.hidden_rtt_ms, rtt_ms)


REFERENCE_DESCRIPTION = "reference curve"
DATA_PROFILE_DESCRIPTION = "dataProfile"


@dataclass(frozen=True, slots=True)
class ThroughputModel:
    """The model chosen for one job, and the words a decision uses to name it."""

    description: str
    fitted: FittedModel | None = None
    data_profile: DataProfile | None = None

    def loss(self, rtt_ms: float, bandwidth_gbps: float | None, local: bool) -> float:
        if local:
            # Reads next to the data are the baseline every loss is measured against.
            rtt_ms, bandwidth_gbps = 0.0, None
        if self.fitted is not None:
            return self.fitted.loss(rtt_ms)
        if self.data_profile is not None:
            return data_stall_loss(self.data_profile, rtt_ms, bandwidth_gbps)
        return reference_loss(rtt_ms)


def describe_fitted(fitted: FittedModel) -> str:
    kind = "data-stall" if fitted.model.kind == ModelKind.DataStall else "curve"
    where = f", cluster default in {fitted.default_from}" if fitted.default_from else ""
    return (
        f"{kind} calibrated on {fitted.samples} samples of class {fitted.workload_class}"
        f" (rms {fitted.rms_error:.1%}{where})"
    )


def choose_model(
    data_profile: DataProfile | None,
    workload_class: str | None,
    fitted: Mapping[str, FittedModel],
) -> ThroughputModel:
    """What predicts a job's loss: its class's trusted profile, else its dataProfile, else the
    reference curve.

    A trusted profile wins over a dataProfile because it is what jobs of the class were observed
    to do; an untrusted one is never used.
    """
    learned = fitted.get(workload_class) if workload_class else None
    if learned is not None and learned.trusted:
        return ThroughputModel(describe_fitted(learned), fitted=learned)
    if data_profile is not None:
        return ThroughputModel(DATA_PROFILE_DESCRIPTION, data_profile=data_profile)
    return ThroughputModel(REFERENCE_DESCRIPTION)


def great_circle_km(a: GeoPoint, b: GeoPoint) -> float:
    lat_a, lat_b = math.radians(a.latitude), math.radians(b.latitude)
    d_lat = lat_b - lat_a
    d_lon = math.radians(b.longitude - a.longitude)
    h = math.sin(d_lat / 2) ** 2 + math.cos(lat_a) * math.cos(lat_b) * math.sin(d_lon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def fibre_floor_ms(a: GeoPoint, b: GeoPoint) -> float:
    """The smallest RTT physics allows between two sites over fibre."""
    return great_circle_km(a, b) * FIBRE_FLOOR_MS_PER_KM


def slowdown(loss: float) -> float:
    """How much longer a job takes at this loss: 1 / (1 - loss)."""
    return 1.0 / max(1.0 - loss, 1e-9)
