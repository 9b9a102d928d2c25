"""Learning a workload class's sensitivity to RTT from the throughput its jobs achieved.

From samples (RTT to the data, throughput, optionally the baseline next to the data) this fits
two models by least squares on the loss, `1 − throughput / baseline`:

* the reference curve's shape with its own `k`: `loss = x / (1 + x)`, `x = k · rtt`;
* the data-stall model reduced to its two identifiable parameters: `x = k · max(0, rtt − h)`,
  where `h` is the RTT that prefetching hides (see `throughput.stall_parameters`).

The data-stall model is chosen only when it explains the samples clearly better, since it has
one parameter more. The trust rule (`TrustRule`, docs/throughput.md) decides whether the engine
may act on the result; until it holds, the reference curve or the job's dataProfile is used.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from tsunagu.api.profiles import ModelKind, ProfileModel, ThroughputProfile, ThroughputSample
from tsunagu.placement.throughput import FittedModel, curve_loss

# Samples at or below this RTT were taken next to the data: they estimate the baseline.
LOCAL_RTT_MS = 0.5
# A throughput this far above the baseline is a counter reset or a wrong label, not a measurement.
MAX_OVER_BASELINE = 1.5
# RTTs closer than this count as one RTT for the trust rule.
RTT_RESOLUTION_MS = 0.5
# Search bounds of k per ms: from 1 % loss at 1,000 ms to 99 % at 0.1 ms.
_K_BOUNDS = (1e-5, 1e3)
# The data-stall model must cut the RMS error by this factor, and by this much loss, to be
# preferred: with one parameter more it always fits a little better.
_STALL_IMPROVEMENT = 0.8
_STALL_MIN_GAIN = 0.002
_GRID_STEPS = 40
_GOLDEN_STEPS = 25


@dataclass(frozen=True, slots=True)
class TrustRule:
    """When a fit may replace the reference curve (docs/throughput.md).

    A baseline next to the data (given, carried by the samples, or measured at ≤ 0.5 ms), at
    least `min_samples` usable samples away from the data at `min_distinct_rtts` RTTs or more,
    and a fit whose RMS error in loss is at most `max_rms_error`. Five samples, not fewer: with
    1 % noise on throughput, three samples of an insensitive class (2–3 % loss) misjudge its k
    by up to 40 % (seen in the simulator).
    """

    min_samples: int = 5
    min_distinct_rtts: int = 2
    max_rms_error: float = 0.02


@dataclass(frozen=True, slots=True)
class IgnoredSample:
    index: int  # position in the input
    reason: str


@dataclass(frozen=True, slots=True)
class CurveFit:
    model: ProfileModel
    rms_error: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """The outcome of one fit, with everything a person needs to judge it."""

    workload_class: str
    baseline: float | None
    baseline_source: str  # "given", "samples" (per-row baselines), "local samples" or "none"
    used: int  # usable samples away from the data
    local: int  # usable samples next to the data
    distinct_rtts: int
    rtt_spread_ms: float  # between the smallest and largest RTT away from the data
    ignored: tuple[IgnoredSample, ...]
    reference: CurveFit | None
    stall: CurveFit | None
    fitted: FittedModel | None  # the chosen fit; None when nothing could be fitted
    untrusted_because: tuple[str, ...]  # empty when trusted

    @property
    def trusted(self) -> bool:
        return self.fitted is not None and self.fitted.trusted


@dataclass(frozen=True, slots=True)
class LossPoint:
    """A usable sample away from the data: its RTT and observed loss, 1 − throughput/baseline."""

    rtt_ms: float
    loss: float


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _baseline_of(
    samples: Sequence[ThroughputSample], given: float | None
) -> tuple[float | None, str]:
    if _finite(given) and given is not None and given > 0:
        return given, "given"
    local = [
        s.throughput
        for s in samples
        if _finite(s.rtt_ms)
        and 0 <= s.rtt_ms <= LOCAL_RTT_MS
        and _finite(s.throughput)
        and s.throughput > 0
    ]
    if local:
        return statistics.median(local), "local samples"
    return None, "none"


def _clean(
    samples: Sequence[ThroughputSample], baseline: float | None
) -> tuple[list[LossPoint], int, list[IgnoredSample]]:
    """Remote points with their observed loss, the count of local ones, and what was dropped."""
    points: list[LossPoint] = []
    local = 0
    ignored: list[IgnoredSample] = []
    for index, sample in enumerate(samples):
        own = sample.baseline if _finite(sample.baseline) and (sample.baseline or 0) > 0 else None
        reference = own if own is not None else baseline
        reason = None
        if not _finite(sample.rtt_ms) or sample.rtt_ms < 0:
            reason = "rttMs is not a number ≥ 0"
        elif not _finite(sample.throughput) or sample.throughput <= 0:
            reason = "throughput is not a number > 0"
        elif reference is None:
            reason = "no baseline to compare with"
        elif sample.throughput > reference * MAX_OVER_BASELINE:
            reason = f"throughput is over {MAX_OVER_BASELINE:g}× the baseline"
        if reason is not None:
            ignored.append(IgnoredSample(index, reason))
            continue
        assert reference is not None
        if sample.rtt_ms <= LOCAL_RTT_MS:
            local += 1
        else:
            points.append(LossPoint(sample.rtt_ms, 1.0 - sample.throughput / reference))
    return points, local, ignored


_GOLDEN = (math.sqrt(5) - 1) / 2


def _golden(objective: Callable[[float], float], low: float, high: float) -> tuple[float, float]:
    """(objective, argument) of the smallest objective in [low, high] by golden-section search."""
    a, b = low, high
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = objective(c), objective(d)
    for _ in range(_GOLDEN_STEPS):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = objective(d)
    return min((fc, c), (fd, d))


def _minimize(objective: Callable[[float], float], grid: Sequence[float]) -> tuple[float, float]:
    """(objective, argument) of the smallest objective: the best point of `grid`, then golden
    section between its neighbours, so that a curve with a flat stretch cannot trap it."""
    values = [objective(x) for x in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    return min((values[best], grid[best]), _golden(objective, low, high))


def _k_grid() -> list[float]:
    low, high = _K_BOUNDS
    ratio = (high / low) ** (1 / _GRID_STEPS)
    return [low * ratio**index for index in range(_GRID_STEPS + 1)]


_K_GRID = _k_grid()


def _sse(points: Sequence[LossPoint], k: float, hidden: float) -> float:
    return sum((curve_loss(k, hidden, p.rtt_ms) - p.loss) ** 2 for p in points)


def _rms(points: Sequence[LossPoint], model: ProfileModel) -> float:
    return math.sqrt(_sse(points, model.k, model.hidden_rtt_ms) / len(points))


def fit_reference_k(points: Sequence[LossPoint]) -> CurveFit:
    """The reference curve's shape, `k` fitted by least squares on the loss."""
    _, k = _minimize(lambda k: _sse(points, k, 0.0), _K_GRID)
    model = ProfileModel(ModelKind.ReferenceCurve, k)
    return CurveFit(model, _rms(points, model))


def fit_data_stall(points: Sequence[LossPoint]) -> CurveFit:
    """`k` and the hidden RTT `h` by least squares: for each `h` (a grid up to the largest RTT,
    then golden section) the best `k`."""

    best_k: dict[float, float] = {}

    def error(hidden: float) -> float:
        value, best_k[hidden] = _minimize(lambda k: _sse(points, k, hidden), _K_GRID)
        return value

    top = max(p.rtt_ms for p in points)
    _, hidden = _minimize(error, [top * index / _GRID_STEPS for index in range(_GRID_STEPS)])
    k = best_k[hidden]
    model = ProfileModel(ModelKind.DataStall, k, hidden)
    return CurveFit(model, _rms(points, model))


def _distinct(rtts: Sequence[float]) -> int:
    return len({round(rtt / RTT_RESOLUTION_MS) for rtt in rtts})


def confidence_of(used: int, spread_ms: float, rms_error: float, rule: TrustRule) -> float:
    """0..1: grows with the sample count and the RTT spread, falls with the fit error.

    `n / (n + 3) · min(1, spread / 10 ms) · max(0, 1 − rms / (2 · max_rms_error))`; a number
    for people and printer columns; the engine acts on `trusted`, never on this.
    """
    count = used / (used + 3)
    spread = min(1.0, spread_ms / 10.0)
    error = max(0.0, 1.0 - rms_error / (2 * rule.max_rms_error))
    return count * spread * error


def calibrate(
    samples: Sequence[ThroughputSample],
    baseline: float | None = None,
    workload_class: str = "",
    rule: TrustRule = TrustRule(),
) -> Calibration:
    """Fit the class's sensitivity to RTT from its samples and say whether to trust it."""
    baseline, source = _baseline_of(samples, baseline)
    if source == "none" and any(_finite(s.baseline) and (s.baseline or 0) > 0 for s in samples):
        source = "samples"
    points, local, ignored = _clean(samples, baseline)
    rtts = [p.rtt_ms for p in points]
    distinct = _distinct(rtts)
    spread = max(rtts) - min(rtts) if rtts else 0.0
    reasons: list[str] = []
    if source == "none":
        reasons.append("no baseline next to the data")
    if len(points) < rule.min_samples:
        reasons.append(
            f"{len(points)} usable samples away from the data (needs {rule.min_samples})"
        )
    if distinct < rule.min_distinct_rtts:
        reasons.append(f"samples at {distinct} distinct RTTs (needs {rule.min_distinct_rtts})")
    if not points:
        return Calibration(
            workload_class,
            baseline,
            source,
            0,
            local,
            0,
            0.0,
            tuple(ignored),
            None,
            None,
            None,
            tuple(reasons),
        )
    reference = fit_reference_k(points)
    stall = fit_data_stall(points) if distinct >= 3 else None
    chosen = reference
    if (
        stall is not None
        and stall.rms_error < _STALL_IMPROVEMENT * reference.rms_error
        and reference.rms_error - stall.rms_error >= _STALL_MIN_GAIN
    ):
        chosen = stall
    if chosen.rms_error > rule.max_rms_error:
        reasons.append(f"RMS error {chosen.rms_error:.1%} over {rule.max_rms_error:.1%}")
    fitted = FittedModel(
        workload_class=workload_class,
        model=chosen.model,
        samples=len(points),
        rms_error=chosen.rms_error,
        confidence=confidence_of(len(points), spread, chosen.rms_error, rule),
        trusted=not reasons,
    )
    return Calibration(
        workload_class,
        baseline,
        source,
        len(points),
        local,
        distinct,
        spread,
        tuple(ignored),
        reference,
        stall,
        fitted,
        tuple(reasons),
    )


def calibrate_profile(profile: ThroughputProfile, rule: TrustRule = TrustRule()) -> Calibration:
    """Refit a profile from the samples its status holds (the fit in status is not trusted as
    written: what the engine acts on is always recomputed from the evidence)."""
    return calibrate(profile.samples, profile.baseline, profile.workload_class, rule)


def fitted_models(
    profiles: Sequence[ThroughputProfile], rule: TrustRule = TrustRule()
) -> dict[str, FittedModel]:
    """{class: fitted model} from the profiles of one namespace (of several profiles of a
    class, a later one wins); `with_defaults` adds the cluster-wide defaults."""
    models: dict[str, FittedModel] = {}
    for profile in profiles:
        fitted = calibrate_profile(profile, rule).fitted
        if fitted is not None:
            models[profile.workload_class] = fitted
    return models


def with_defaults(
    own: Mapping[str, FittedModel],
    defaults: Mapping[str, FittedModel],
    namespace: str,
    default_namespace: str,
) -> dict[str, FittedModel]:
    """The fits the engine gets for the jobs of `namespace`, per class, from its own profiles'
    fits and those of the cluster-wide default profiles in `default_namespace` ("": none;
    `fitted_models` of each): its own fit when trusted, else the default's when trusted
    (marked as coming from there), else its own untrusted fit, which the engine does not use
    (docs/throughput.md).

    An untrusted profile of its own does not hide the default: the learner creates one for
    every class it sees, long before it holds enough samples to be trusted."""
    models = dict(own)
    if not default_namespace or default_namespace == namespace:
        return models
    for workload_class, fitted in defaults.items():
        mine = models.get(workload_class)
        if fitted.trusted and (mine is None or not mine.trusted):
            models[workload_class] = replace(fitted, default_from=default_namespace)
    return models
