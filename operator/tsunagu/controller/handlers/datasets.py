"""Datasets: where data lives and where it may be read from."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from tsunagu.api.names import DATASETS, GROUP, VERSION
from tsunagu.api.parse import SpecError
from tsunagu.controller.handlers.operator import running

logger = logging.getLogger(__name__)


@kopf.on.event(GROUP, VERSION, DATASETS)
async def dataset_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    if event["type"] == "DELETED":
        operator.catalog.delete_dataset(metadata["namespace"], metadata["name"])
    else:
        try:
            operator.catalog.upsert_dataset(body)
        except SpecError as error:
            logger.warning("dataset not usable: %s", error)
    operator.queue.wake()
    if operator.leading:
        await operator.datasets.check()  # its rules may have changed under running jobs
