"""Regions: the catalog's sites; any change may unblock pending jobs."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.api.names import GROUP, REGIONS, VERSION
from tsunagu.controller.handlers.operator import running


@kopf.on.event(GROUP, VERSION, REGIONS)
async def region_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    if event["type"] == "DELETED":
        operator.catalog.delete_region(body["metadata"]["name"])
    else:
        operator.catalog.upsert_region(body)
    operator.queue.wake()
