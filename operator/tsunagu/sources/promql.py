"""Reading one sample of a Prometheus instant-vector result, as every source here needs it:
`{metric: {labels}, value: [timestamp, "number"]}` with two labels that name what it is about.
Anything else is a problem with a name, counted by the source and never raised."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class SampleProblem(StrEnum):
    """Why a sample is unusable before any source-specific check (values are metric labels)."""

    MALFORMED = "malformed"  # not a {metric, value: [ts, "v"]} instant sample
    MISSING_LABEL = "missing_label"
    NOT_A_NUMBER = "not_a_number"
    INFINITE = "infinite"
    NEGATIVE = "negative"


@dataclass(frozen=True, slots=True)
class InstantSample:
    first: str  # the value of the first label asked for
    second: str
    timestamp: float
    value: float  # finite and not negative


def read_instant_sample(
    raw: object, first_label: str, second_label: str
) -> InstantSample | SampleProblem:
    if not isinstance(raw, Mapping):
        return SampleProblem.MALFORMED
    labels, value = raw.get("metric"), raw.get("value")
    if not isinstance(labels, Mapping) or not isinstance(value, list | tuple) or len(value) != 2:
        return SampleProblem.MALFORMED
    try:
        timestamp, number = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return SampleProblem.MALFORMED
    if not math.isfinite(timestamp):
        return SampleProblem.MALFORMED
    first, second = labels.get(first_label), labels.get(second_label)
    if not isinstance(first, str) or not isinstance(second, str) or not first or not second:
        return SampleProblem.MISSING_LABEL
    if math.isnan(number):
        return SampleProblem.NOT_A_NUMBER
    if math.isinf(number):
        return SampleProblem.INFINITE
    if number < 0:
        return SampleProblem.NEGATIVE
    return InstantSample(first, second, timestamp, number)
