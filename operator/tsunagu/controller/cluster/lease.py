"""Leader election on a `coordination.k8s.io/v1` Lease, with the rules of client-go's
`tools/leaderelection` (what kube-scheduler uses):

- A candidate takes the Lease when nobody holds it, or when the record it sees has not changed
  for `leaseDurationSeconds` *by its own clock* (the time it first saw that record, not the
  holder's `renewTime`: clocks of two machines need not agree, their rates do).
- Every write is optimistic: a replace at the resourceVersion last read; a 409 means someone
  else wrote first, and the record is read again.
- Taking the Lease from another holder counts one more `leaseTransitions`; `acquireTime` is when
  the current holder took it, `renewTime` its last renewal.
- The leader renews every `retry_period`; if no renewal succeeded for `renew_deadline` it stops
  acting and becomes a candidate again. Because `renew_deadline < lease_duration`, it stops
  before anyone else may start: `write_window` is the gate every write of the operator asks.
- On a clean shutdown the leader releases the Lease (an empty holder, 1 s duration), so a
  standby takes over at its next try instead of after a lease duration.

Where client-go only polls (a GET every retry period), a candidate here also watches the Lease
(when the API offers `watch_lease`): it sees each renewal as it is written, so the clock of the
record starts within milliseconds of the write instead of up to a retry period late, and it
tries exactly when the record it saw is a lease duration old (or at once when the Lease is
released) instead of at its next tick. Nothing else changes: the try still reads the Lease and
replaces it at the version read, the expiry is still counted from this replica's own sight of
the record (a watch running late only makes it later), and the ticks go on should the watch
fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tsunagu.controller.cluster.client import Conflict

logger = logging.getLogger(__name__)

# client-go's jitter of the candidates' tries: up to 20 % on top of the retry period.
JITTER = 1.2
# A try at a record's expiry is sent this much after it (our clock), never before.
EXPIRY_MARGIN_SECONDS = 0.01
LEASE_WATCH_TIMEOUT_SECONDS = 300
LEASE_WATCH_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0)


class LeaseAPI(Protocol):
    async def get_lease(
        self, namespace: str, name: str, within: float
    ) -> dict[str, Any] | None: ...

    async def create_lease(self, lease: dict[str, Any], within: float) -> dict[str, Any]: ...

    async def replace_lease(self, lease: dict[str, Any], within: float) -> dict[str, Any]: ...


class LeaseWatchAPI(Protocol):
    def watch_lease(
        self, namespace: str, name: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The Lease's spec as a leader-election record."""

    holder: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


def micro_time(now: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One candidate for one Lease. `run` tries to lead for ever: `on_started` when it takes the
    Lease, `on_stopped` when it loses it (after which it is a candidate again)."""

    def __init__(
        self,
        api: LeaseAPI,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self.clock = clock
        self.wall_clock = wall_clock
        # The Lease as last read or written, and when (our clock) its record last changed.
        self._lease: dict[str, Any] | None = None
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        # When (our clock) the last acquire or renewal that succeeded was *sent*: the Lease was
        # written at or after that moment, so nobody may take it before `lease_duration` later.
        self._renewed_at: float | None = None
        self.transitions = 0  # times this replica started leading
        # Set when the watch saw the record change: a waiting candidate looks at its expiry.
        self._changed = asyncio.Event()

    # --- what the operator asks --------------------------------------------------------------
    @property
    def leading(self) -> bool:
        return self.write_window() > 0

    def write_window(self) -> float:
        """Seconds a write sent now may take; 0 once the renew deadline has passed without a
        renewal: from then on this replica writes nothing, though it may still hold the Lease."""
        if self._renewed_at is None:
            return 0.0
        now = self.clock()
        if now > self._renewed_at + self.timings.renew_deadline:
            return 0.0
        return self._renewed_at + self.timings.lease_duration - now

    @property
    def holder(self) -> str:
        return self._observed.holder if self._observed is not None else ""

    # --- one try -----------------------------------------------------------------------------
    async def try_acquire_or_renew(self) -> bool:
        """One try to take or keep the Lease; True if this replica holds it now."""
        sent_at = self.clock()
        within = self._request_timeout(sent_at)
        now = micro_time(self.wall_clock())
        duration = max(1, round(self.timings.lease_duration))
        observed = self._observed
        if self._renewed_at is not None and observed is not None and self._lease is not None:
            # The fast path of a leader: replace at the version it wrote last.
            record = LeaseRecord(
                self.identity, duration, observed.acquire_time, now, observed.transitions
            )
            try:
                self._wrote(await self._replace(self._lease, record, within), sent_at)
                return True
            except Exception as error:
                logger.info("renewing Lease %s failed, reading it again: %s", self._where(), error)
        lease = await self.api.get_lease(self.namespace, self.name, within)
        if lease is None:
            record = LeaseRecord(self.identity, duration, now, now, 0)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": record.spec(),
            }
            try:
                self._wrote(await self.api.create_lease(body, within), sent_at)
            except Conflict:
                return False  # another candidate created it first
            return True
        self._saw(lease)
        current = self._observed
        assert current is not None
        mine = current.holder == self.identity
        if current.holder and not mine and self._valid(sent_at):
            self._lost()
            return False
        if mine:
            # Still ours: a renewal keeps the acquire time; a new term of ours (after a renew
            # deadline passed) starts a new one, but is no transition to another holder.
            acquired = current.acquire_time if self._renewed_at is not None else now
            record = LeaseRecord(self.identity, duration, acquired, now, current.transitions)
        else:
            record = LeaseRecord(self.identity, duration, now, now, current.transitions + 1)
        try:
            self._wrote(await self._replace(lease, record, within), sent_at)
        except Conflict:
            return False  # someone wrote it since we read it
        return True

    async def release(self) -> None:
        """Gives the Lease up (clean shutdown), if this replica still leads: nothing it started
        may run any more when this is called."""
        if not self.leading or self._lease is None or self._observed is None:
            return
        now = micro_time(self.wall_clock())
        record = LeaseRecord("", 1, now, now, self._observed.transitions)
        self._renewed_at = None
        try:
            self._saw(await self._replace(self._lease, record, self.timings.renew_deadline))
            logger.info("released Lease %s", self._where())
        except Exception as error:
            logger.warning("could not release Lease %s: %s", self._where(), error)

    # --- the loop ----------------------------------------------------------------------------
    async def run(
        self,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        watch = None
        if hasattr(self.api, "watch_lease"):
            watch = asyncio.create_task(self._watch(), name="lease watch")
        try:
            await self._lead(on_started, on_stopped)
        finally:
            if watch is not None:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)

    async def _lead(
        self,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], Awaitable[None]],
    ) -> None:
        while True:
            await self._acquire()
            self.transitions += 1
            logger.info("leading: holding Lease %s as %s", self._where(), self.identity)
            await on_started()
            # Cancelled at shutdown: whoever cancels stops what was started, then `release`s.
            await self._renew()
            logger.warning("stopped leading: Lease %s not renewed in time", self._where())
            self._lost()
            await on_stopped()

    async def _acquire(self) -> None:
        said = ""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    return
            except Exception as error:
                status = getattr(error, "status", None)
                if status in (403, 404):
                    # Not a hiccup: this replica will never lead until the flags or RBAC change.
                    message = (
                        f"Lease {self._where()}: {status} {getattr(error, 'reason', '')}; check "
                        "--leader-elect-namespace, --leader-elect-lease-name and the Lease's RBAC"
                    )
                    if message != said:
                        logger.error("%s", message)
                        said = message
                else:
                    logger.info("Lease %s not acquired: %s", self._where(), error)
            await self._until_next_try()

    async def _until_next_try(self) -> None:
        """The next retry period (with client-go's jitter), or sooner: when the record seen
        expires by our clock, or when the watch sees the Lease released."""
        tick = self.clock() + self.timings.retry_period * random.uniform(1.0, JITTER)
        while True:
            left = min(tick, self._expires_at()) - self.clock()
            if left <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=left)
            except TimeoutError:
                return
            if self._observed is not None and not self._observed.holder:
                return  # released (or never held): nobody's to wait for

    def _expires_at(self) -> float:
        """When (our clock) the record seen stops being valid, if another holds it."""
        observed = self._observed
        if observed is None or not observed.holder or observed.holder == self.identity:
            return float("inf")
        return self._observed_at + observed.lease_duration_seconds + EXPIRY_MARGIN_SECONDS

    async def _watch(self) -> None:
        """Follows the Lease for as long as this replica runs; while it leads, its own writes
        are what it knows, and the events are not needed."""
        api: Any = self.api
        failures = 0
        while True:
            try:
                events = api.watch_lease(self.namespace, self.name, LEASE_WATCH_TIMEOUT_SECONDS)
                async with contextlib.aclosing(events):
                    async for kind, lease in events:
                        failures = 0
                        if kind in ("ADDED", "MODIFIED") and self._renewed_at is None:
                            self._saw(lease)
                            self._changed.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                delay = LEASE_WATCH_RETRY_SECONDS[min(failures, len(LEASE_WATCH_RETRY_SECONDS) - 1)]
                failures += 1
                logger.info(
                    "Lease %s watch failed (%s); again in %.1f s", self._where(), error, delay
                )
                await asyncio.sleep(delay)

    async def _renew(self) -> None:
        """Returns once the renew deadline passed without a renewal."""
        while True:
            await asyncio.sleep(self.timings.retry_period)
            while self.leading:
                try:
                    if await self.try_acquire_or_renew():
                        break
                    return  # someone else holds it
                except Exception as error:
                    logger.info("Lease %s not renewed: %s", self._where(), error)
                await asyncio.sleep(min(self.timings.retry_period, max(self.write_window(), 0)))
            if not self.leading:
                return

    # --- the record --------------------------------------------------------------------------
    def _request_timeout(self, now: float) -> float:
        """A renewal may not hang past the renew deadline; a candidate's try, one period."""
        if self._renewed_at is not None:
            left = self._renewed_at + self.timings.renew_deadline - now
            return max(0.5, min(left, self.timings.renew_deadline / 2))
        return max(1.0, self.timings.retry_period)

    async def _replace(
        self, lease: dict[str, Any], record: LeaseRecord, within: float
    ) -> dict[str, Any]:
        metadata = lease["metadata"]
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "resourceVersion": metadata["resourceVersion"],
            },
            "spec": record.spec(),
        }
        return await self.api.replace_lease(body, within)

    def _saw(self, lease: dict[str, Any]) -> None:
        """Takes the Lease as read: the clock of its record restarts only when it changed."""
        record = LeaseRecord.of(lease)
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()
        self._lease = lease

    def _wrote(self, lease: dict[str, Any], sent_at: float) -> None:
        self._lease = lease
        self._observed = LeaseRecord.of(lease)
        self._observed_at = self.clock()
        self._renewed_at = sent_at

    def _valid(self, now: float) -> bool:
        """The record seen has changed within its holder's lease duration."""
        observed = self._observed
        if observed is None:
            return False
        return self._observed_at + observed.lease_duration_seconds > now

    def _lost(self) -> None:
        self._renewed_at = None

    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"
