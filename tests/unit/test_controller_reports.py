"""Statuses and Events on their way to the API server: one merge patch per job for however many
changes were made since the last write, failed writes kept for the next try, and reports held
while gangs are being bound (never longer than the hold allows).

The API server is replaced by a recorder here; the integration tests read every status and
Event the real writer produced from a real API server."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY

from tsunagu.controller.cluster.client import Kube
from tsunagu.controller.report.status import ConditionUpdate
from tsunagu.controller.report.statusbook import FLUSH_BATCH, StatusBook
from tsunagu.controller.report.writer import ReportWriter
from tsunagu.controller.scheduling.inflight import InFlight
from tsunagu.controller.settings import OperatorSettings, add_arguments, from_args

KEY = ("team", "train")


class RecordingKube:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.failures: list[BaseException] = []
        self.arrived = asyncio.Event()

    async def patch_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        self.patches.append((namespace, name, status))
        self.arrived.set()

    async def create_event(self, body: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        self.events.append(body)
        self.arrived.set()


def book(kube: RecordingKube) -> StatusBook:
    return StatusBook(cast(Kube, kube))


def placed(statuses: StatusBook, now: float = 100.0) -> bool:
    return statuses.update(
        KEY, 1, now,
        conditions=[ConditionUpdate("Scheduled", True, "Placed", "placed in tokyo")],
        fields={"region": "tokyo"},
    )  # fmt: skip


def running(statuses: StatusBook, now: float = 101.0) -> bool:
    return statuses.update(
        KEY, 1, now,
        conditions=[ConditionUpdate("Running", True, "PodsRunning", "every replica runs")],
        fields={"runningReplicas": 4},
    )  # fmt: skip


def test_an_update_is_kept_in_memory_until_flushed() -> None:
    kube = RecordingKube()
    statuses = book(kube)
    assert placed(statuses)
    assert kube.patches == []
    assert statuses.current(KEY)["region"] == "tokyo"
    assert statuses.condition(KEY, "Scheduled")["reason"] == "Placed"  # type: ignore[index]
    assert statuses.pending() == 1


def test_changes_between_flushes_become_one_patch() -> None:
    kube = RecordingKube()
    statuses = book(kube)
    statuses.seed(KEY, {"conditions": []})
    placed(statuses)
    running(statuses)
    assert asyncio.run(statuses.flush())
    assert len(kube.patches) == 1
    _, _, patch = kube.patches[0]
    assert patch["region"] == "tokyo"
    assert patch["runningReplicas"] == 4
    assert {c["type"] for c in patch["conditions"]} == {"Scheduled", "Running"}
    assert statuses.pending() == 0


def test_a_second_flush_sends_only_what_changed_since_the_first() -> None:
    kube = RecordingKube()
    statuses = book(kube)
    placed(statuses)
    asyncio.run(statuses.flush())
    statuses.update(KEY, 1, 102.0, fields={"runningReplicas": 2})
    asyncio.run(statuses.flush())
    assert kube.patches[1][2] == {"runningReplicas": 2}


def test_an_update_that_changes_nothing_writes_nothing() -> None:
    kube = RecordingKube()
    statuses = book(kube)
    placed(statuses)
    asyncio.run(statuses.flush())
    assert not placed(statuses)
    assert statuses.pending() == 0


def test_a_failed_write_is_sent_again_with_later_changes() -> None:
    kube = RecordingKube()
    kube.failures.append(ApiException(status=500, reason="etcd timeout"))
    statuses = book(kube)
    placed(statuses)
    assert not asyncio.run(statuses.flush())
    assert kube.patches == []
    running(statuses)
    assert asyncio.run(statuses.flush())
    (_, _, patch), *_ = kube.patches
    assert patch["region"] == "tokyo"
    assert patch["runningReplicas"] == 4


def test_a_job_gone_from_the_api_is_forgotten() -> None:
    kube = RecordingKube()
    kube.failures.append(ApiException(status=404, reason="Not Found"))
    statuses = book(kube)
    placed(statuses)
    assert asyncio.run(statuses.flush())
    assert statuses.current(KEY) == {}
    assert statuses.pending() == 0


def test_a_forgotten_job_is_not_written() -> None:
    kube = RecordingKube()
    statuses = book(kube)
    placed(statuses)
    statuses.forget(KEY)
    asyncio.run(statuses.flush())
    assert kube.patches == []


def writer_with(kube: RecordingKube, max_hold: float) -> tuple[ReportWriter, InFlight]:
    gangs = InFlight()
    return ReportWriter(book(kube), cast(Kube, kube), gangs.idle, max_hold), gangs


EVENT = {"reason": "Placed", "metadata": {"namespace": "team"}}


async def eventually(kube: RecordingKube, check: Callable[[], bool]) -> None:
    """Waits until `check` holds after what reaches the recorder, failing after 5 seconds."""
    async with asyncio.timeout(5.0):
        while not check():
            kube.arrived.clear()
            await kube.arrived.wait()


def test_reports_leave_at_once_when_no_gang_is_in_flight() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        writer, _ = writer_with(kube, max_hold=30.0)
        task = asyncio.create_task(writer.run())
        placed(writer.statuses)
        writer.post_event(EVENT)
        await eventually(kube, lambda: len(kube.patches) == 1 and kube.events == [EVENT])
        task.cancel()

    asyncio.run(scenario())


def test_reports_wait_for_the_gangs_then_go_out_together() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        writer, gangs = writer_with(kube, max_hold=30.0)
        task = asyncio.create_task(writer.run())
        gangs.add(KEY)
        placed(writer.statuses)
        writer.post_event(EVENT)
        running(writer.statuses)
        await asyncio.sleep(0.05)  # the writer has woken and is holding (30 s away)
        assert kube.patches == []
        assert kube.events == []
        assert REGISTRY.get_sample_value("tsunagu_reports_pending") == 2  # a status, an Event
        gangs.discard(KEY)
        await eventually(kube, lambda: len(kube.patches) == 1 and kube.events == [EVENT])
        assert REGISTRY.get_sample_value("tsunagu_reports_pending") == 0
        task.cancel()

    asyncio.run(scenario())


def test_reports_wait_no_longer_than_the_hold() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        writer, gangs = writer_with(kube, max_hold=0.2)
        task = asyncio.create_task(writer.run())
        gangs.add(KEY)
        started = time.monotonic()
        placed(writer.statuses)
        await eventually(kube, lambda: len(kube.patches) == 1)
        assert time.monotonic() - started >= 0.2  # held for the whole hold, gangs still busy
        task.cancel()

    asyncio.run(scenario())


def test_a_failed_write_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tsunagu.controller.report.writer.RETRY_SECONDS", 0.05)

    async def scenario() -> None:
        kube = RecordingKube()
        kube.failures.append(ApiException(status=503, reason="unavailable"))
        failures = REGISTRY.get_sample_value("tsunagu_report_failures_total", {"kind": "status"})
        writer, _ = writer_with(kube, max_hold=30.0)
        task = asyncio.create_task(writer.run())
        placed(writer.statuses)
        await eventually(kube, lambda: len(kube.patches) == 1)
        assert writer.pending() == 0
        after = REGISTRY.get_sample_value("tsunagu_report_failures_total", {"kind": "status"})
        assert after == (failures or 0) + 1
        task.cancel()

    asyncio.run(scenario())


def test_in_flight_is_idle_only_without_gangs() -> None:
    gangs = InFlight()
    assert gangs.idle.is_set()
    gangs.add(("a", "1"))
    gangs.add(("a", "2"))
    gangs.discard(("a", "1"))
    assert not gangs.idle.is_set()
    assert ("a", "2") in gangs
    assert len(gangs) == 1
    gangs.discard(("a", "2"))
    assert gangs.idle.is_set()


def parse_run_flags(*argv: str) -> OperatorSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))


def test_the_hold_is_a_flag_and_30_seconds_by_default() -> None:
    assert parse_run_flags().reporting.hold_seconds == 30.0
    assert parse_run_flags("--report-hold-seconds", "0").reporting.hold_seconds == 0.0


def test_a_negative_hold_is_refused_naming_the_flag() -> None:
    with pytest.raises(SystemExit, match="--report-hold-seconds"):
        parse_run_flags("--report-hold-seconds", "-1")


def test_events_left_by_a_cancelled_flush_go_out_with_the_next() -> None:
    async def scenario() -> None:
        kube = RecordingKube()
        writer, _ = writer_with(kube, max_hold=30.0)
        for i in range(FLUSH_BATCH * 2):
            writer.post_event({**EVENT, "reason": f"R{i}"})
        flushing = asyncio.create_task(writer.flush())
        await asyncio.sleep(0)  # the first batch is on its way
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        assert writer.pending() == FLUSH_BATCH
        await writer.flush()
        assert len(kube.events) == FLUSH_BATCH
        assert writer.pending() == 0

    asyncio.run(scenario())
