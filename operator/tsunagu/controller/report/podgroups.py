"""What a pod group's user sees without knowing tsunagu: Events on the pods (`Scheduled`,
`FailedScheduling`, as kube-scheduler posts them) and on the PodGroup, the PodGroup's status
(phase and counts, as scheduler-plugins defines them) and tsunagu's verdict in its annotations
(region, RTT, predicted loss, reason and message), all readable with `kubectl describe`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tsunagu.api.names import POD_KIND
from tsunagu.api.podgroups import GroupPod, group_name
from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.cluster.client import Kube, NotLeading
from tsunagu.controller.groups import PodGroupTracker
from tsunagu.controller.report.events import EventRecorder
from tsunagu.controller.report.status import explain, timestamp
from tsunagu.placement.engine import Decision
from tsunagu.placement.wire import decision_numbers

logger = logging.getLogger(__name__)

FAILED_SCHEDULING = "FailedScheduling"
SCHEDULED = "Scheduled"
# The annotations tsunagu writes on a PodGroup (its verdict; status is scheduler-plugins').
REGION_ANNOTATION = "tsunagu.io/region"
RTT_ANNOTATION = "tsunagu.io/rtt-ms"
LOSS_ANNOTATION = "tsunagu.io/predicted-loss"
REASON_ANNOTATION = "tsunagu.io/reason"
MESSAGE_ANNOTATION = "tsunagu.io/message"
MAX_ANNOTATION = 1024


class PodGroupReporter:
    def __init__(self, *, client: Kube, events: EventRecorder, groups: PodGroupTracker) -> None:
        self.client = client
        self.events = events
        self.groups = groups

    def placed(
        self,
        key: JobKey,
        decision: Decision,
        bound: Sequence[tuple[str, str]],
        pods: Mapping[str, GroupPod],
    ) -> dict[str, str]:
        """Events for a gang bound (each pod's node, the group's region and why); returns the
        annotations the PodGroup gets."""
        message = explain(decision)
        namespace = key[0]
        for name, node in bound:
            pod = pods.get(name)
            text = f"Successfully assigned {namespace}/{name} to {node} ({decision.region})"
            self.events.object_event(_pod_ref(namespace, name, pod), "Normal", SCHEDULED, text)
        self._group_event(key, "Normal", "Placed", message)
        self.groups.state(key).verdict = ("Placed", message)
        numbers = decision_numbers(decision.rtt_ms, decision.predicted_loss)
        annotations = {
            REGION_ANNOTATION: decision.region or "",
            REASON_ANNOTATION: "Placed",
            MESSAGE_ANNOTATION: message[:MAX_ANNOTATION],
            RTT_ANNOTATION: _text(numbers["rttMs"]),
            LOSS_ANNOTATION: _text(numbers["predictedThroughputLoss"]),
        }
        metrics.PLACEMENTS.labels(region=decision.region or "", outcome="Placed").inc()
        return annotations

    def unschedulable(
        self, key: JobKey, pending: Iterable[GroupPod], reason: str, message: str
    ) -> dict[str, str] | None:
        """FailedScheduling on each waiting pod and the reason on the PodGroup, once per
        verdict; returns the annotations to write, or None when the verdict did not change."""
        state = self.groups.state(key)
        if state.verdict == (reason, message):
            return None
        state.verdict = (reason, message)
        text = f"tsunagu: {reason}: {message}"
        for pod in pending:
            ref = _pod_ref(key[0], pod.name, pod)
            self.events.object_event(ref, "Warning", FAILED_SCHEDULING, text)
        self._group_event(key, "Warning", reason, message)
        metrics.PLACEMENTS.labels(region="", outcome=reason).inc()
        return {
            REASON_ANNOTATION: reason,
            MESSAGE_ANNOTATION: message[:MAX_ANNOTATION],
            REGION_ANNOTATION: "",
            RTT_ANNOTATION: "",
            LOSS_ANNOTATION: "",
        }

    async def write(
        self, key: JobKey, status: Mapping[str, Any], annotations: Mapping[str, str] | None
    ) -> None:
        """Writes what changed of the PodGroup (nothing without a PodGroup object)."""
        if key not in self.groups.objects:
            return
        state = self.groups.state(key)
        changed = {k: v for k, v in status.items() if state.written.get(k) != v}
        if changed.get("phase") == "Scheduled" or (
            "scheduleStartTime" not in state.written and status.get("scheduled")
        ):
            changed["scheduleStartTime"] = timestamp(time.time())
        metadata = {"annotations": dict(annotations)} if annotations else {}
        if not changed and not metadata:
            return
        try:
            await self.client.patch_pod_group(key[0], group_name(key), metadata, changed)
        except NotLeading:
            return
        except Exception as error:
            # Advice, like an Event: the next change writes the whole difference again.
            metrics.REPORT_FAILURES.labels(kind="podgroup").inc()
            logger.warning("PodGroup %s/%s not written: %s", key[0], group_name(key), error)
            return
        state.written.update(changed)

    def _group_event(self, key: JobKey, kind: str, reason: str, message: str) -> None:
        body = self.groups.bodies.get(key)
        if body is not None:
            self.events.object_event(body, kind, reason, message)


def _text(number: float | None) -> str:
    return "" if number is None else f"{number:g}"


def _pod_ref(namespace: str, name: str, pod: GroupPod | None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": POD_KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": pod.uid if pod else None},
    }
