"""Events: the core/v1 Event bodies tsunagu posts, with the same reason as the condition."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any, Protocol

from tsunagu.api.types import JobKey
from tsunagu.controller.jobs import JobTracker
from tsunagu.controller.report.status import timestamp

COMPONENT = "tsunagu"


class EventSink(Protocol):
    def post_event(self, event: Mapping[str, Any]) -> None: ...


def event_body(
    involved: Mapping[str, Any], kind: str, reason: str, message: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about `involved`, reported by the tsunagu component."""
    metadata = involved["metadata"]
    namespace = metadata.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": metadata["name"],
            "namespace": namespace,
            "uid": metadata.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Posts Events on TrainingJobs through the report writer (they wait with the statuses while
    gangs are being bound)."""

    def __init__(self, writer: EventSink, jobs: JobTracker) -> None:
        self.writer = writer
        self.jobs = jobs

    def job_event(self, key: JobKey, kind: str, reason: str, message: str) -> None:
        """An Event on the TrainingJob with the same reason as its condition; nothing for a job
        the operator no longer knows."""
        body = self.jobs.body(key)
        if body is None:
            return
        self.writer.post_event(event_body(body, kind, reason, message, timestamp(time.time())))

    def object_event(
        self, involved: Mapping[str, Any], kind: str, reason: str, message: str
    ) -> None:
        """An Event on any object (`involved` needs apiVersion, kind and metadata), e.g. the
        pods and PodGroup of a pod group."""
        self.writer.post_event(event_body(involved, kind, reason, message, timestamp(time.time())))
