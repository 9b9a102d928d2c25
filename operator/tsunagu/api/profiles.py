"""ThroughputProfile: what tsunagu has learned about one workload class (DESIGN.md §2).

A profile's spec names the class; its status holds the recent samples of observed throughput,
the baseline next to the data and the fitted model. `parse_throughput_profile` reads the object
into immutable types, naming the field on bad input like every other parser of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from tsunagu.api.fields import Fields, SpecError

__all__ = [
    "MAX_PROFILE_SAMPLES",
    "THROUGHPUT_PROFILES",
    "THROUGHPUT_PROFILE_KIND",
    "ModelKind",
    "ProfileModel",
    "SpecError",
    "ThroughputProfile",
    "ThroughputSample",
    "merge_samples",
    "parse_throughput_profile",
    "status_of",
]

THROUGHPUT_PROFILE_KIND = "ThroughputProfile"
THROUGHPUT_PROFILES = "throughputprofiles"
# The CRD bounds status.samples to this many; writers keep the most recent ones.
MAX_PROFILE_SAMPLES = 64
DEFAULT_NAMESPACE = "default"


class ModelKind(StrEnum):
    ReferenceCurve = "ReferenceCurve"
    DataStall = "DataStall"


@dataclass(frozen=True, slots=True)
class ThroughputSample:
    """Throughput a job of the class achieved while its data was `rtt_ms` away.

    `baseline` is the throughput the same job would reach next to its data, when the sample
    carries it; otherwise the profile's baseline applies.
    """

    rtt_ms: float
    throughput: float
    baseline: float | None = None
    region: str | None = None
    observed_at: float | None = None  # Unix seconds


@dataclass(frozen=True, slots=True)
class ProfileModel:
    """A learned curve: `loss = x / (1 + x)` with `x = k · max(0, rtt − hidden_rtt_ms)`.

    `ReferenceCurve` has `hidden_rtt_ms = 0` (the shape of the reference curve, its own `k`);
    `DataStall` is the data-stall model reduced to what throughput can reveal: the RTT that
    prefetching hides, and what each further millisecond costs (see docs/throughput.md).
    """

    kind: ModelKind
    k: float  # per ms of RTT
    hidden_rtt_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ThroughputProfile:
    namespace: str
    name: str
    workload_class: str
    samples: tuple[ThroughputSample, ...] = ()
    baseline: float | None = None
    model: ProfileModel | None = None
    confidence: float | None = None
    trusted: bool = False
    fitted_at: float | None = None
    # When the Trusted condition last changed status: a writer keeps it while it holds.
    trusted_since: float | None = None
    uid: str | None = None
    generation: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _timestamp(fields: Fields, key: str) -> float | None:
    value = fields.raw(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise fields.error(key, "must be an RFC 3339 time") from None
    if not isinstance(value, datetime):
        raise fields.error(key, "must be an RFC 3339 time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _sample(fields: Fields) -> ThroughputSample:
    return ThroughputSample(
        rtt_ms=fields.required_number("rttMs", minimum=0),
        throughput=fields.required_number("throughput", minimum=0),
        baseline=fields.positive_number("baseline"),
        region=fields.text("region"),
        observed_at=_timestamp(fields, "observedAt"),
    )


def _model(status: Fields) -> ProfileModel | None:
    fields = status.child("model")
    if fields is None:
        return None
    kind = fields.enum("kind", ModelKind, ModelKind.ReferenceCurve)
    hidden = fields.number("hiddenRttMs", minimum=0)
    if kind == ModelKind.ReferenceCurve and hidden:
        raise fields.error("hiddenRttMs", "is only meaningful with kind DataStall")
    return ProfileModel(
        kind=kind,
        k=fields.required_number("k", minimum=0),
        hidden_rtt_ms=hidden or 0.0,
    )


def _trusted_since(status: Fields) -> float | None:
    for condition in status.maps("conditions"):
        if condition.raw("type") == "Trusted":
            return _timestamp(condition, "lastTransitionTime")
    return None


def parse_throughput_profile(obj: object) -> ThroughputProfile:
    root = Fields.root(obj, THROUGHPUT_PROFILE_KIND)
    metadata = root.required_child("metadata")
    name = metadata.required_text("name")
    namespace = metadata.text("namespace") or DEFAULT_NAMESPACE
    root = root.renamed(f"{namespace}/{name}")
    declared_kind = root.raw("kind")
    if declared_kind is not None and declared_kind != THROUGHPUT_PROFILE_KIND:
        raise root.error("kind", f"must be {THROUGHPUT_PROFILE_KIND} (got {declared_kind!r})")
    spec = root.required_child("spec")
    status = root.child_or_empty("status")
    samples = tuple(_sample(entry) for entry in status.maps("samples"))
    if len(samples) > MAX_PROFILE_SAMPLES:
        raise status.error("samples", f"must hold at most {MAX_PROFILE_SAMPLES} entries")
    return ThroughputProfile(
        namespace=namespace,
        name=name,
        workload_class=spec.required_text("workloadClass"),
        samples=samples,
        baseline=status.positive_number("baseline"),
        model=_model(status),
        confidence=status.number("confidence", minimum=0, maximum=1),
        trusted=status.boolean("trusted", False),
        fitted_at=_timestamp(status, "fittedAt"),
        trusted_since=_trusted_since(status),
        uid=metadata.text("uid"),
        generation=metadata.integer("generation", minimum=0),
    )


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_samples(
    existing: tuple[ThroughputSample, ...],
    new: tuple[ThroughputSample, ...] | list[ThroughputSample],
    limit: int = MAX_PROFILE_SAMPLES,
) -> tuple[ThroughputSample, ...]:
    """The most recent `limit` samples, oldest first (samples without a time count as oldest)."""
    merged = sorted((*existing, *new), key=lambda s: s.observed_at or 0.0)
    return tuple(merged[-limit:]) if limit > 0 else ()


def status_of(
    samples: tuple[ThroughputSample, ...],
    baseline: float | None,
    model: ProfileModel | None,
    rms_error: float | None,
    confidence: float | None,
    trusted: bool,
    fitted_at: float,
    untrusted_because: tuple[str, ...] = (),
    observed_generation: int | None = None,
    transitioned_at: float | None = None,
) -> dict[str, object]:
    """The `status` of a ThroughputProfile as the CRD defines it, ready for a status patch.

    The `Trusted` condition's `lastTransitionTime` is `transitioned_at`, else `fitted_at`: a
    writer whose condition keeps its status passes the time it last changed.
    """

    def sample(s: ThroughputSample) -> dict[str, object]:
        body: dict[str, object] = {"rttMs": round(s.rtt_ms, 4), "throughput": s.throughput}
        if s.region:
            body["region"] = s.region
        if s.baseline is not None:
            body["baseline"] = s.baseline
        if s.observed_at is not None:
            body["observedAt"] = _rfc3339(s.observed_at)
        return body

    status: dict[str, object] = {
        "samples": [sample(s) for s in samples[-MAX_PROFILE_SAMPLES:]],
        "sampleCount": min(len(samples), MAX_PROFILE_SAMPLES),
        "trusted": trusted,
        "fittedAt": _rfc3339(fitted_at),
        "conditions": [
            {
                "type": "Trusted",
                "status": "True" if trusted else "False",
                "reason": "RuleHolds" if trusted else "RuleNotMet",
                "message": "the trust rule holds"
                if trusted
                else "; ".join(untrusted_because)[:32768],
                "lastTransitionTime": _rfc3339(
                    fitted_at if transitioned_at is None else transitioned_at
                ),
            }
        ],
    }
    if baseline is not None:
        status["baseline"] = baseline
    if model is not None:
        model_body: dict[str, object] = {"kind": model.kind.value, "k": model.k}
        if model.kind == ModelKind.DataStall:
            model_body["hiddenRttMs"] = model.hidden_rtt_ms
        status["model"] = model_body
    if rms_error is not None:
        status["rmsError"] = min(max(rms_error, 0.0), 1.0)
    if confidence is not None:
        status["confidence"] = min(max(confidence, 0.0), 1.0)
    if observed_generation is not None:
        status["observedGeneration"] = observed_generation
    return status
