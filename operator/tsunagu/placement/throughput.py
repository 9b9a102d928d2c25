"""The throughput model: how much training throughput a given RTT to the data costs (DESIGN.md §3).

Losses are fractions in [0, 1): 0.12 means the job runs at 88% of the speed it would have next
to its data.
"""

from __future__ import annotations

import math

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
