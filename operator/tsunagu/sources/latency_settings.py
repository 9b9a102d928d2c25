"""Settings of the Prometheus latency source: where Prometheus is, which queries give the RTT and
the jitter per ordered region pair, in which unit, and how often to ask. Read from the camelCase
block of the Helm values or the operator's flags; a wrong value raises `SettingsError` naming
the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from tsunagu.sources.latency import LatencySettings

# 4 × a 5 s scrape interval: rate() needs ≥ 2 samples in the window, and a short window lets the
# p95 fall back within ~window after an RTT drop (a rise shows within one scrape). With a scrape
# interval above 5 s use a window of at least 4 × that interval (see docs/latency.md).
DEFAULT_WINDOW = "20s"
_PAIR = "source_region, target_region"
_BUCKETS = "tsunagu_probe_rtt_seconds_bucket"


def probe_quantile_query(quantile: float, window: str = DEFAULT_WINDOW) -> str:
    """The q-quantile of the probe's RTT histogram per ordered pair, in seconds."""
    return f"histogram_quantile({quantile}, sum by ({_PAIR}, le) (rate({_BUCKETS}[{window}])))"


def probe_jitter_query(window: str = DEFAULT_WINDOW) -> str:
    """p95 − p50 of the probe's RTT per ordered pair, in seconds (both sides share the labels)."""
    return f"{probe_quantile_query(0.95, window)} - {probe_quantile_query(0.5, window)}"


DEFAULT_RTT_QUERY = probe_quantile_query(0.95)
DEFAULT_JITTER_QUERY = probe_jitter_query()

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class ValueUnit(StrEnum):
    SECONDS = "Seconds"
    MILLISECONDS = "Milliseconds"

    @property
    def to_ms(self) -> float:
        return 1000.0 if self is ValueUnit.SECONDS else 1.0


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the field."""


@dataclass(frozen=True)
class PrometheusLatencySettings:
    url: str = "http://127.0.0.1:9090"
    rtt_query: str = DEFAULT_RTT_QUERY
    jitter_query: str | None = DEFAULT_JITTER_QUERY  # None: every pair gets 0 ms jitter
    source_label: str = "source_region"
    target_label: str = "target_region"
    unit: ValueUnit = ValueUnit.SECONDS
    interval_seconds: float = 2.0  # a drop shows after ~window + this; queries are cheap
    timeout_seconds: float = 5.0
    staleness_seconds: float = 120.0  # for LatencyMatrix.build; not applied by this module
    max_rtt_ms: float = 10_000.0  # anything above is a broken exporter, not a network

    @classmethod
    def for_operator(cls, latency: LatencySettings) -> Self:
        """From the operator's latency section (its flags), checked like the camelCase block."""
        block: dict[str, Any] = {
            "intervalSeconds": latency.interval_seconds,
            "stalenessSeconds": latency.staleness_seconds,
        }
        if latency.prometheus_url:
            block["url"] = latency.prometheus_url
        if latency.rtt_query:
            block["rttQuery"] = latency.rtt_query
        if latency.jitter_query:
            block["jitterQuery"] = latency.jitter_query
        return cls.from_mapping(block, where="flags")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "prometheus") -> Self:
        """Reads the camelCase configuration block (Helm values / operator config)."""
        known = sorted(_camel_case(item.name) for item in fields(cls))
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingsError(f"{where}.{unknown[0]}: unknown field (known: {known})")
        defaults = cls()

        def text(key: str, default: str) -> str:
            value = data.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise SettingsError(f"{where}.{key}: must be a non-empty string")
            return value

        def seconds(key: str, default: float) -> float:
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise SettingsError(f"{where}.{key}: must be a number > 0, got {value!r}")
            return float(value)

        jitter = data.get("jitterQuery", defaults.jitter_query)
        if jitter is not None and (not isinstance(jitter, str) or not jitter.strip()):
            raise SettingsError(f"{where}.jitterQuery: must be a query string or null")
        labels = {
            "sourceLabel": text("sourceLabel", defaults.source_label),
            "targetLabel": text("targetLabel", defaults.target_label),
        }
        for key, label in labels.items():
            if not _LABEL_NAME.match(label):
                raise SettingsError(f"{where}.{key}: {label!r} is not a Prometheus label name")
        if labels["sourceLabel"] == labels["targetLabel"]:
            raise SettingsError(f"{where}.targetLabel: must differ from sourceLabel")
        unit = data.get("unit", defaults.unit.value)
        if unit not in tuple(ValueUnit):
            raise SettingsError(f"{where}.unit: must be one of {[u.value for u in ValueUnit]}")
        return cls(
            url=text("url", defaults.url),
            rtt_query=text("rttQuery", defaults.rtt_query),
            jitter_query=jitter,
            source_label=labels["sourceLabel"],
            target_label=labels["targetLabel"],
            unit=ValueUnit(unit),
            interval_seconds=seconds("intervalSeconds", defaults.interval_seconds),
            timeout_seconds=seconds("timeoutSeconds", defaults.timeout_seconds),
            staleness_seconds=seconds("stalenessSeconds", defaults.staleness_seconds),
            max_rtt_ms=seconds("maxRttMs", defaults.max_rtt_ms),
        )


def _camel_case(snake: str) -> str:
    first, *rest = snake.split("_")
    return first + "".join(word.capitalize() for word in rest)
