"""The seam between the operator and whatever measures latency: a `LatencySource` owns its poll
loop and hands over `Measurement`s, each naming the source that made it. Prometheus is one
implementation, chosen by configuration; another (a CSV file, Node annotations) implements the
same protocol and is added to `latency_source`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import NoReturn, Protocol

from tsunagu.placement.latency import DEFAULT_STALENESS_SECONDS, Measurement

UpdateCallback = Callable[[tuple[Measurement, ...]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class LatencySettings:
    """The operator's latency section: where measurements come from and when they go stale."""

    # Without a URL no source runs and only declared links count.
    prometheus_url: str | None = None
    # PromQL returning seconds per source/target pair; None: the probe's defaults.
    rtt_query: str | None = None
    jitter_query: str | None = None
    interval_seconds: float = 10.0
    staleness_seconds: float = DEFAULT_STALENESS_SECONDS
    # A pair whose measurement went stale takes its declared link instead of being unknown.
    declared_fallback: bool = False


class LatencySource(Protocol):
    """Measures RTTs between regions for as long as the operator runs."""

    async def poll(
        self,
        on_update: UpdateCallback,
        *,
        known_regions: Callable[[], Collection[str] | None] = ...,
    ) -> NoReturn:
        """Calls `on_update` with every pair's latest measurement after each refresh; never
        raises except when cancelled."""
        ...

    def close(self) -> None: ...


def latency_source(settings: LatencySettings) -> LatencySource | None:
    """The source the settings choose, or None when only declared links count."""
    if not settings.prometheus_url:
        return None
    from tsunagu.sources.latency_settings import PrometheusLatencySettings
    from tsunagu.sources.prometheus_latency import PrometheusLatencySource

    return PrometheusLatencySource(PrometheusLatencySettings.for_operator(settings))
