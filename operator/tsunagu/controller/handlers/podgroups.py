"""PodGroups (scheduler-plugins' `scheduling.x-k8s.io`): the size of a pod group's gang. Served
only where the CRD is installed; without it, groups give their size by annotation."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.api.podgroups import POD_GROUP_GROUP, POD_GROUP_VERSION, POD_GROUPS
from tsunagu.controller.handlers.operator import running


@kopf.on.event(POD_GROUP_GROUP, POD_GROUP_VERSION, POD_GROUPS)
async def pod_group_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    if event["type"] == "DELETED":
        key = operator.groups.deleted(metadata["namespace"], metadata["name"])
    else:
        key = operator.groups.observe(body)
    operator.pod_group_changed(key)
