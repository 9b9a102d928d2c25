"""The one way tsunagu's sources talk to Prometheus: a blocking HTTP client without retries."""

from __future__ import annotations

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry


def connect(url: str, timeout_seconds: float) -> PrometheusConnect:
    """A client for instant queries at `url`. No client-side retries: every source comes back
    on its own interval, and retries with back-off would stretch one refresh well past its
    timeout."""
    return PrometheusConnect(
        url=url, retry=Retry(total=0, raise_on_status=False), timeout=timeout_seconds
    )
