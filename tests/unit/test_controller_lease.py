"""Leader election on a Lease, against an in-memory Lease store with resourceVersions (the
optimistic concurrency of the API server) and a clock the test moves: who takes the Lease when,
what the record says, and that a leader's writes stop before anyone else may start.

The integration tests run the same elector against the real API server."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tsunagu.controller.cluster.client import Conflict
from tsunagu.controller.cluster.lease import LeaderElector, LeaseRecord, LeaseTimings

TIMINGS = LeaseTimings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseStore:
    """One namespace of Leases: create refuses an existing name, replace a stale version."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.down = False
        self.writes: list[dict[str, Any]] = []

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the API server does not answer")

    async def get_lease(self, namespace: str, name: str, within: float) -> dict[str, Any] | None:
        self._check()
        lease = self.leases.get(name)
        return copy.deepcopy(lease) if lease is not None else None

    async def create_lease(self, lease: dict[str, Any], within: float) -> dict[str, Any]:
        self._check()
        name = lease["metadata"]["name"]
        if name in self.leases:
            raise Conflict(name)
        return self._store(lease)

    async def replace_lease(self, lease: dict[str, Any], within: float) -> dict[str, Any]:
        self._check()
        name = lease["metadata"]["name"]
        current = self.leases.get(name)
        if current is None:
            raise RuntimeError("404")
        if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]:
            raise Conflict(name)
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.leases[stored["metadata"]["name"]] = stored
        self.writes.append(copy.deepcopy(stored))
        return copy.deepcopy(stored)

    def record(self, name: str = "lease") -> LeaseRecord:
        return LeaseRecord.of(self.leases[name])


def elector(store: LeaseStore, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        store, namespace="ns", name="lease", identity=identity, timings=TIMINGS,
        clock=clock, wall_clock=clock,
    )  # fmt: skip


def attempt(candidate: LeaderElector) -> bool:
    return asyncio.run(candidate.try_acquire_or_renew())


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert attempt(a)
    record = store.record()
    assert (record.holder, record.lease_duration_seconds, record.transitions) == ("a", 15, 0)
    assert record.acquire_time == record.renew_time
    assert a.leading
    assert a.write_window() == pytest.approx(15.0)


def test_a_standby_waits_a_lease_duration_of_its_own_clock_after_the_last_change() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a)
    assert not attempt(b)  # held and fresh
    assert not b.leading
    assert b.holder == "a"
    clock.now += 14.0
    assert not attempt(b)  # unchanged for 14 s: still a's
    clock.now += 1.5
    assert attempt(b)  # unchanged for 15.5 s by b's clock: expired
    record = store.record()
    assert (record.holder, record.transitions) == ("b", 1)
    assert record.acquire_time == record.renew_time


def test_renewals_keep_acquire_time_and_transitions_and_move_renew_time() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a)
    first = store.record()
    for _ in range(5):
        clock.now += 2.0
        assert attempt(a)
        assert not attempt(b)  # every renewal restarts b's wait
    later = store.record()
    assert later.acquire_time == first.acquire_time
    assert later.transitions == first.transitions
    assert later.renew_time != first.renew_time


def test_a_renewal_that_fails_closes_the_write_gate_at_the_renew_deadline() -> None:
    store, clock = LeaseStore(), Clock()
    a = elector(store, clock, "a")
    assert attempt(a)
    store.down = True
    clock.now += 9.0
    with pytest.raises(ConnectionError):
        attempt(a)
    assert a.leading
    assert a.write_window() == pytest.approx(6.0)  # a write may take until the lease could end
    clock.now += 1.5  # 10.5 s without a renewal
    assert not a.leading
    assert a.write_window() == 0.0


def test_the_old_leader_stops_writing_before_the_new_one_may_start() -> None:
    """The gate of a leader cut off from the API server closes (renew deadline, its clock)
    before a standby may take the Lease (lease duration after the last change it saw)."""
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a)
    assert not attempt(b)
    last_renewal = clock.now
    gate_closed_at = taken_at = None
    while taken_at is None:
        clock.now += 0.5
        if gate_closed_at is None and not a.leading:
            gate_closed_at = clock.now
        if attempt(b):  # a no longer reaches the API server, so it never renews
            taken_at = clock.now
    assert gate_closed_at is not None
    assert gate_closed_at - last_renewal == pytest.approx(10.5)
    assert taken_at - last_renewal == pytest.approx(15.0)
    assert gate_closed_at < taken_at


def test_two_candidates_racing_for_an_expired_lease_one_wins_the_other_conflicts() -> None:
    store, clock = LeaseStore(), Clock()
    old, c, d = elector(store, clock, "old"), elector(store, clock, "c"), elector(store, clock, "d")
    assert attempt(old)
    assert not attempt(c)
    assert not attempt(d)
    clock.now += 20.0  # old stopped renewing: expired for both

    async def race() -> list[bool]:
        return list(await asyncio.gather(c.try_acquire_or_renew(), d.try_acquire_or_renew()))

    results = asyncio.run(race())
    assert results.count(True) == 1
    assert store.record().holder == ("c" if results[0] else "d")
    assert store.record().transitions == 1


def test_release_lets_a_standby_take_over_at_its_next_try() -> None:
    store, clock = LeaseStore(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a)
    asyncio.run(a.release())
    assert not a.leading
    record = store.record()
    assert (record.holder, record.lease_duration_seconds) == ("", 1)
    clock.now += 2.0  # b's next try: the released record has a 1 s duration
    assert attempt(b)
    assert store.record().transitions == 1


def test_run_starts_and_stops_the_term_as_the_lease_is_taken_and_lost() -> None:
    store = LeaseStore()
    fast = LeaseTimings(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)
    candidate = LeaderElector(store, namespace="ns", name="lease", identity="a", timings=fast)
    calls: list[str] = []

    async def scenario() -> None:
        async def started() -> None:
            calls.append("started")
            store.down = True  # the API server goes away right after the Lease was taken

        async def stopped() -> None:
            calls.append("stopped")
            store.down = False

        task = asyncio.create_task(candidate.run(started, stopped))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if calls.count("started") == 2:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert calls[:3] == ["started", "stopped", "started"]
    assert candidate.transitions == 2
    # A new term of the same holder: a new acquire time, but no transition to another holder.
    assert store.record().transitions == 0
    acquired = {LeaseRecord.of(w).acquire_time for w in store.writes}
    assert len(acquired) == 2


class WatchedLeaseStore(LeaseStore):
    """Also serves a watch of the Lease, as the API server does: its state first, then every
    write; `written_at` is when (time.monotonic) each write landed."""

    def __init__(self) -> None:
        super().__init__()
        self.watchers: list[asyncio.Queue[tuple[str, dict[str, Any]]]] = []
        self.written_at: list[tuple[str, float]] = []

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        stored = super()._store(lease)
        self.written_at.append((LeaseRecord.of(stored).holder, time.monotonic()))
        for queue in self.watchers:
            queue.put_nowait(("MODIFIED", copy.deepcopy(stored)))
        return stored

    async def watch_lease(
        self, namespace: str, name: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.watchers.append(queue)
        try:
            if name in self.leases:
                yield "ADDED", copy.deepcopy(self.leases[name])
            while True:
                yield await queue.get()
        finally:
            self.watchers.remove(queue)


# A retry period far longer than the lease: a candidate that only ticked would take over after
# a minute; one that follows the Lease's watch tries when the record it saw expires.
SLOW_TICKS = LeaseTimings(lease_duration=0.6, renew_deadline=0.4, retry_period=60.0)


def test_a_watching_standby_tries_when_the_record_it_saw_expires_not_at_its_next_tick() -> None:
    store = WatchedLeaseStore()
    renewing = LeaseTimings(lease_duration=0.6, renew_deadline=0.4, retry_period=0.1)
    old = LeaderElector(store, namespace="ns", name="lease", identity="old", timings=renewing)
    new = LeaderElector(store, namespace="ns", name="lease", identity="new", timings=SLOW_TICKS)
    taken: list[float] = []

    async def scenario() -> None:
        async def nothing() -> None:
            return None

        async def took() -> None:
            taken.append(time.monotonic())

        leading = asyncio.create_task(old.run(nothing, nothing))
        await asyncio.wait_for(_until(lambda: old.leading), timeout=10)
        standby = asyncio.create_task(new.run(took, nothing))
        await asyncio.sleep(0.5)  # a few renewals, each seen by the standby as it is written
        leading.cancel()  # the leader dies: no more renewals, no release
        await asyncio.gather(leading, return_exceptions=True)
        await asyncio.wait_for(_until(lambda: bool(taken)), timeout=10)
        standby.cancel()
        await asyncio.gather(standby, return_exceptions=True)

    asyncio.run(scenario())
    # Safety: not before a lease duration after the old holder's last write landed (the standby
    # saw it at that moment or later).
    last_renewal = max(at for holder, at in store.written_at if holder == "old")
    assert taken[0] >= last_renewal + SLOW_TICKS.lease_duration
    assert store.record().holder == "new"
    assert store.record().transitions == 1


def test_a_watching_standby_takes_a_released_lease_at_once() -> None:
    store = WatchedLeaseStore()
    old = LeaderElector(store, namespace="ns", name="lease", identity="old", timings=SLOW_TICKS)
    new = LeaderElector(store, namespace="ns", name="lease", identity="new", timings=SLOW_TICKS)

    async def scenario() -> None:
        async def nothing() -> None:
            return None

        assert await old.try_acquire_or_renew()
        standby = asyncio.create_task(new.run(nothing, nothing))
        await asyncio.sleep(0.1)
        assert not new.leading
        await old.release()
        await asyncio.wait_for(_until(lambda: new.leading), timeout=10)
        standby.cancel()
        await asyncio.gather(standby, return_exceptions=True)

    asyncio.run(scenario())
    assert store.record().holder == "new"


async def _until(predicate: Any) -> None:
    while not predicate():  # noqa: ASYNC110 - polls the elector's state, which has no event
        await asyncio.sleep(0.01)
