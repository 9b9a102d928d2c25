"""The one writer of TrainingJob status. It keeps the status each job should have and, for jobs
whose status changed since it was last written, the status as the API server has it; `flush`
sends each such job the difference as one JSON merge patch. Several parts of the controller can
update a job's status without overwriting each other, and changes made between two flushes (a
gang placed, then its pods running) reach the API server as one write."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tsunagu.api.types import JobKey
from tsunagu.controller import metrics
from tsunagu.controller.cluster.client import Kube, NotLeading, is_not_found
from tsunagu.controller.packed import PackedDocuments
from tsunagu.controller.report.status import ConditionUpdate, job_state, merge_conditions

logger = logging.getLogger(__name__)

# Patches in flight at once: the reports lane's connections, kept busy without queueing on them.
FLUSH_BATCH = 32


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 patch that turns `old` into `new` (null removes a key)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = copy.deepcopy(value)
    return patch


def _nothing() -> None:
    return None


@dataclass
class StatusBook:
    kube: Kube
    # Called whenever a job's status changes, so that a writer knows there is something to flush.
    on_change: Callable[[], None] = _nothing
    _desired: PackedDocuments[JobKey] = field(default_factory=PackedDocuments)
    # Jobs with changes not written yet → their status as last written (what the API has).
    _written: PackedDocuments[JobKey] = field(default_factory=PackedDocuments)

    def seed(self, key: JobKey, status: Mapping[str, Any] | None) -> None:
        """Takes the status found on the object the first time the operator sees it."""
        if key not in self._desired:
            self._desired[key] = dict(status or {})

    def current(self, key: JobKey) -> dict[str, Any]:
        """A copy of the job's status as the operator means it to be, written or not yet
        (changing the copy changes nothing)."""
        return self._desired.get(key) or {}

    def condition(self, key: JobKey, type_: str) -> dict[str, Any] | None:
        for condition in self.current(key).get("conditions") or []:
            if condition.get("type") == type_:
                return dict(condition)
        return None

    def forget(self, key: JobKey) -> None:
        self._desired.pop(key, None)
        self._written.pop(key, None)

    def pending(self) -> int:
        """How many jobs have a status change not written yet."""
        return len(self._written)

    def update(
        self,
        key: JobKey,
        generation: int,
        now: float,
        conditions: Iterable[ConditionUpdate] = (),
        fields: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> bool:
        """Records the changes, to be written by the next `flush`. True if anything changed."""
        old = self.current(key)
        new = self.current(key)
        for name in remove:
            new.pop(name, None)
        new.update(fields or {})
        updates = list(conditions)
        if updates:
            existing = old.get("conditions") or []
            new["conditions"] = merge_conditions(existing, updates, generation, now)
        new["observedGeneration"] = generation
        new["state"] = job_state(new.get("conditions") or [])
        if not merge_patch(old, new):
            return False
        if key not in self._written:
            self._written[key] = old
        self._desired[key] = new
        self.on_change()
        return True

    async def flush(self) -> bool:
        """Writes every pending change, a batch at a time. False if some write failed (what it
        carried stays pending, for the next flush)."""
        keys = list(self._written)
        succeeded = True
        for start in range(0, len(keys), FLUSH_BATCH):
            batch = keys[start : start + FLUSH_BATCH]
            results = await asyncio.gather(*(self._write(key) for key in batch))
            succeeded = succeeded and all(results)
        return succeeded

    async def _write(self, key: JobKey) -> bool:
        written = self._written.pop(key, None)
        if written is None:  # forgotten, or written by another flush meanwhile
            return True
        patch = merge_patch(written, self.current(key))
        if not patch:
            return True
        try:
            await self.kube.patch_job_status(key[0], key[1], patch)
        except asyncio.CancelledError:
            if key in self._desired:  # it may not have arrived: the final flush sends it again
                self._written[key] = written
            raise
        except NotLeading:
            # Not a failure: this replica may not write now; the change stays pending.
            if key in self._desired:
                self._written[key] = written
            return False
        except Exception as error:
            if is_not_found(error):
                self.forget(key)
                return True
            metrics.REPORT_FAILURES.labels(kind="status").inc()
            logger.warning("status of %s/%s not written, will retry: %s", *key, error)
            if key in self._desired:
                # Changes made while this write was failing are measured from the same base.
                self._written[key] = written
            return False
        return True
