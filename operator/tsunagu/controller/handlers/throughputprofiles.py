"""ThroughputProfiles: what was learned of a workload class; a change may place pending jobs
that the reference curve kept waiting."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.api.names import GROUP, THROUGHPUT_PROFILES, VERSION
from tsunagu.controller.handlers.operator import running


@kopf.on.event(GROUP, VERSION, THROUGHPUT_PROFILES)
async def throughput_profile_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    if event["type"] == "DELETED":
        operator.catalog.delete_profile(metadata["namespace"], metadata["name"])
    else:
        operator.catalog.upsert_profile(body)
    operator.queue.wake()
