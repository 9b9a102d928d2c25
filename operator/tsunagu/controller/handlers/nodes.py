"""Nodes: their GPUs and readiness feed the view of the operator's cluster."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.controller.handlers.operator import running


@kopf.on.event("", "v1", "nodes")
async def node_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    name = body["metadata"]["name"]
    view = operator.cluster.view
    changed = view.delete_node(name) if event["type"] == "DELETED" else view.upsert_node(body)
    if changed:
        await operator.node_changed(name)
