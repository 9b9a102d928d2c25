"""TrainingJobs: each event is recorded and the job's lifecycle looks at it."""

from __future__ import annotations

from typing import Any

import kopf

from tsunagu.api.names import GROUP, TRAINING_JOBS, VERSION
from tsunagu.controller.handlers.operator import running


@kopf.on.event(GROUP, VERSION, TRAINING_JOBS)
async def training_job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    operator = running(memo)
    if operator is None:
        return
    body = event["object"]
    metadata = body["metadata"]
    if event["type"] == "DELETED":
        operator.job_deleted((metadata["namespace"], metadata["name"]))
    else:
        await operator.job_changed(body)
