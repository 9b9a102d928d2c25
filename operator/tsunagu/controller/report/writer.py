"""When statuses and Events reach the API server: binding gangs comes first.

Every write shares one API server with the pods being created and bound; during a burst each
status patch or Event written is capacity taken from the gangs still waiting. So reports wait
while any gang is being created and bound — at most `max_hold` seconds — and then go out
together: a job placed and running meanwhile gets one status write instead of two or three.
Without gangs in flight a report leaves at once. Memory holds the truth throughout (the
StatusBook); the API server hears it a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from tsunagu.controller import metrics
from tsunagu.controller.cluster.client import Kube, NotLeading
from tsunagu.controller.report.statusbook import FLUSH_BATCH, StatusBook

logger = logging.getLogger(__name__)

# After a failed write, what is left waits this long before the next try.
RETRY_SECONDS = 2.0


class ReportWriter:
    def __init__(
        self,
        statuses: StatusBook,
        kube: Kube,
        gangs_idle: asyncio.Event,
        max_hold: float,
    ) -> None:
        self.statuses = statuses
        self.kube = kube
        self.gangs_idle = gangs_idle
        self.max_hold = max_hold
        self._events: list[Mapping[str, Any]] = []
        self._wake = asyncio.Event()
        statuses.on_change = self._wake.set
        # Read when scraped: the operator has one writer.
        metrics.REPORTS_PENDING.set_function(self.pending)

    def post_event(self, event: Mapping[str, Any]) -> None:
        self._events.append(event)
        self._wake.set()

    def pending(self) -> int:
        return self.statuses.pending() + len(self._events)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gangs_idle.wait(), timeout=self.max_hold)
            if not await self.flush():
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def flush(self) -> bool:
        """Writes what is pending: statuses, then Events. False if a status write failed."""
        written = await self.statuses.flush()
        while self._events:
            # Taken a batch at a time: if this flush is cancelled (shutdown), the rest is still
            # here for the final one.
            batch, self._events = self._events[:FLUSH_BATCH], self._events[FLUSH_BATCH:]
            await asyncio.gather(*(self._post(event) for event in batch))
        return written

    async def _post(self, event: Mapping[str, Any]) -> None:
        try:
            await self.kube.create_event(event)
        except NotLeading:
            return  # this replica may not write now: the term that posted it is over
        except Exception as error:  # an Event is advice; it is not tried again
            metrics.REPORT_FAILURES.labels(kind="event").inc()
            logger.warning("could not post event %s: %s", event["reason"], error)
