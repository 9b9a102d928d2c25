"""The scheduling queue: pending TrainingJobs in priority, then arrival order, and a wake-up
signal for the decision loop when something that could unblock them changes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from tsunagu.api.types import JobKey, TrainingJobSpec


@dataclass
class SchedulingQueue:
    _pending: dict[JobKey, TrainingJobSpec] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, job: TrainingJobSpec) -> None:
        """Queues the job; wakes the loop only if it is new here or changed. A pending job seen
        again unchanged (the echo of its own status write) needs no new decision, and with
        thousands pending every needless pass costs seconds."""
        if self._pending.get(job.key) != job:
            self._wake.set()
        self._pending[job.key] = job

    def remove(self, key: JobKey) -> None:
        self._pending.pop(key, None)

    forget = remove  # a deleted job leaves the queue

    def clear(self) -> None:
        """A term ended: the next one queues what it finds pending."""
        self._pending.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def ordered(self) -> list[TrainingJobSpec]:
        """Highest priority first, then oldest, then by name so the order is total."""
        return sorted(
            self._pending.values(), key=lambda j: (-j.priority, j.created_at, j.namespace, j.name)
        )

    def wake(self) -> None:
        """Capacity, latency or regions changed: pending jobs deserve another look."""
        self._wake.set()

    async def wait(self, retry_after: float) -> None:
        """Returns when woken or after `retry_after` seconds (the retry timer)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), retry_after)
        self._wake.clear()
