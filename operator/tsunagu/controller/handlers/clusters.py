"""Clusters: member clusters whose regions the hub may place gangs in; each is checked at once
when created or edited (its kubeconfig read from the Secret it names)."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.api.names import CLUSTERS, GROUP, VERSION
from tsunagu.controller.handlers.operator import running


@kopf.on.event(GROUP, VERSION, CLUSTERS)
async def cluster_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    name = event["object"]["metadata"]["name"]
    if event["type"] == "DELETED":
        await operator.members.deleted(name)
    else:
        operator.members.observe(event["object"])
    await operator.member_changed(name)
