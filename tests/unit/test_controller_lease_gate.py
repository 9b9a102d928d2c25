"""The write gate in `Kube`: no write leaves while the Lease does not allow it (and the Lease's
own requests always do); a 429 is sent again after its Retry-After; the health endpoints; the
leader-election flags. Against a small local HTTP server standing in for the API server."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tsunagu.controller.cluster.client import Kube, NotLeading
from tsunagu.controller.settings import HealthSettings, add_arguments, from_args
from tsunagu.controller.startup.duties import TermTasks
from tsunagu.controller.startup.health import HealthServer


class Gate:
    def __init__(self, window: float) -> None:
        self.window = window

    def write_window(self) -> float:
        return self.window


@asynccontextmanager
async def api_server(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[Kube]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = k8s.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    kube = Kube(configuration)
    try:
        yield kube
    finally:
        await kube.close()
        await runner.cleanup()


def test_a_closed_gate_refuses_every_write_before_it_is_sent() -> None:
    requests: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        requests.append(f"{request.method} {request.path}")
        return web.json_response({})

    async def scenario() -> None:
        async with api_server(handler) as kube:
            kube.gate = Gate(0.0)
            for write in (
                kube.create_pod({"metadata": {"namespace": "n", "name": "p"}}),
                kube.bind_pod("n", "p", "node"),
                kube.delete_pod("n", "p"),
                kube.patch_job_status("n", "j", {"observedGeneration": 1}),
                kube.create_event({"metadata": {"namespace": "n"}}),
                kube.patch_region_status("r", {}),
            ):
                with pytest.raises(NotLeading):
                    await write
            # The Lease itself is never gated: renewing it is how a leader stays one.
            assert await kube.get_lease("ns", "l", within=5) == {}
            kube.gate = Gate(5.0)
            await kube.bind_pod("n", "p", "node")

    asyncio.run(scenario())
    assert requests == [
        "GET /apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
        "POST /api/v1/namespaces/n/pods/p/binding",
    ]


def test_a_write_may_not_outlive_the_window_of_its_lease() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)  # an API server that answers too late
        return web.json_response({})

    async def scenario() -> float:
        async with api_server(handler) as kube:
            kube.gate = Gate(0.3)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await kube.bind_pod("n", "p", "node")
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.5


def test_429_is_sent_again_after_retry_after() -> None:
    arrivals: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) <= 2:
            return web.json_response({}, status=429, headers={"Retry-After": "0.3"})
        return web.json_response({}, status=201)

    async def scenario() -> None:
        async with api_server(handler) as kube:
            await kube.create_pod({"metadata": {"namespace": "n", "name": "p"}})

    asyncio.run(scenario())
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.28
    assert arrivals[2] - arrivals[1] >= 0.28


def test_a_gate_that_closes_during_a_429_wait_stops_the_retry() -> None:
    arrivals: list[float] = []
    gate = Gate(5.0)

    async def handler(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        gate.window = 0.0  # the Lease was lost while the request was refused
        return web.json_response({}, status=429, headers={"Retry-After": "0.1"})

    async def scenario() -> None:
        async with api_server(handler) as kube:
            kube.gate = gate
            with pytest.raises(NotLeading):
                await kube.bind_pod("n", "p", "node")

    asyncio.run(scenario())
    assert len(arrivals) == 1


def test_other_refusals_are_answers_not_retried() -> None:
    arrivals: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.json_response({"message": "nope"}, status=422)

    async def scenario() -> None:
        async with api_server(handler) as kube:
            with pytest.raises(ApiException) as raised:
                await kube.create_pod({"metadata": {"namespace": "n", "name": "p"}})
            assert raised.value.status == 422

    asyncio.run(scenario())
    assert len(arrivals) == 1


class Observed:
    def __init__(self, leading: bool, synced: bool, silent: float) -> None:
        self.leading = leading
        self.synced = synced
        self.silent = silent

    def ready(self) -> bool:
        return self.synced

    def api_unreachable_for(self) -> float:
        return self.silent


@pytest.mark.parametrize(
    ("observed", "health", "readiness"),
    [
        pytest.param(None, 503, 503, id="starting"),
        pytest.param(Observed(True, True, 1.0), 200, 200, id="leader"),
        pytest.param(Observed(False, True, 1.0), 200, 200, id="synced-standby"),
        pytest.param(Observed(False, False, 1.0), 200, 503, id="standby-not-synced"),
        pytest.param(Observed(True, True, 61.0), 503, 200, id="api-unreachable"),
    ],
)
def test_health_and_readiness(observed: Observed | None, health: int, readiness: int) -> None:
    server = HealthServer(HealthSettings(api_unreachable_seconds=60.0))
    server.operator = observed
    assert server.health()[0] == health
    assert server.readiness()[0] == readiness


def test_the_health_server_answers_on_its_port_and_a_taken_port_is_an_oserror() -> None:
    async def scenario() -> tuple[int, str]:
        import aiohttp

        server = HealthServer(HealthSettings())
        await server.listen(0, host="127.0.0.1")
        assert server._runner is not None
        port = server._runner.addresses[0][1]
        other = HealthServer(HealthSettings())
        with pytest.raises(OSError, match="address already in use"):
            await other.listen(port, host="127.0.0.1")
        server.operator = Observed(False, True, 0.0)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as answer,
        ):
            result = answer.status, await answer.text()
        await server.close()
        return result

    assert asyncio.run(scenario()) == (200, "standby, view synced\n")


def parse(*argv: str) -> Any:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))


def test_leader_election_defaults_are_kube_schedulers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    election = parse().leader_election
    assert election.enabled
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (
        15.0,
        10.0,
        2.0,
    )
    assert election.identity.endswith(f"_{__import__('os').getpid()}")


def test_identity_and_namespace_come_from_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "tsunagu-abc")
    monkeypatch.setenv("POD_UID", "1234")
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    election = parse().leader_election
    assert (election.identity, election.namespace) == ("tsunagu-abc_1234", "ops")
    assert parse("--leader-elect-namespace", "x").leader_election.namespace == "x"
    assert not parse("--leader-elect", "false").leader_election.enabled


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--leader-elect-renew-deadline", "20"), "--leader-elect-lease-duration"),
        (("--leader-elect-retry-period", "12"), "--leader-elect-renew-deadline"),
        (("--leader-elect-retry-period", "0"), "--leader-elect-retry-period"),
    ],
)
def test_timings_that_break_the_election_name_the_flag(argv: tuple[str, ...], flag: str) -> None:
    with pytest.raises(SystemExit) as raised:
        parse(*argv)
    assert flag in str(raised.value)


def test_tasks_spawned_between_terms_are_dropped_not_run() -> None:
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)

    async def scenario() -> None:
        tasks = TermTasks()
        tasks.spawn(work("before"), name="before")
        tasks.open = True
        tasks.spawn(work("during"), name="during")
        await asyncio.sleep(0.01)
        tasks.open = False
        tasks.spawn(work("after"), name="after")
        await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert ran == ["during"]


def test_a_new_term_looks_at_the_highest_priority_and_oldest_jobs_first() -> None:
    from types import SimpleNamespace

    from tests.support.scenario import training_job
    from tsunagu.controller.jobs import JobTracker
    from tsunagu.controller.startup.duties import LeaderDuties

    jobs = JobTracker()
    for name, priority, created in [
        ("low-old", 0, "2026-01-01T00:00:00Z"),
        ("high-new", 10, "2026-01-03T00:00:00Z"),
        ("broken", 0, "2026-01-01T00:00:00Z"),
        ("high-old", 10, "2026-01-02T00:00:00Z"),
        ("low-new", 0, "2026-01-04T00:00:00Z"),
    ]:
        body = training_job("team", name, None, replicas=1, gpus=1)
        body["spec"]["priority"] = priority
        if name == "broken":
            body["spec"]["replicas"] = "many"  # does not parse: looked at last
        body["metadata"].update(uid=name, generation=1, creationTimestamp=created)
        jobs.observe(body)
    duties = LeaderDuties(SimpleNamespace(jobs=jobs))  # type: ignore[arg-type]
    assert [name for _, name in duties._by_priority()] == [
        "high-old", "high-new", "low-old", "low-new", "broken",
    ]  # fmt: skip


def test_a_term_that_ends_leaves_nothing_half_done_to_the_next() -> None:
    """Jobs being bound, GPUs assumed, queued jobs, backoffs: the next term starts from what the
    API server has, through its reconcile of every job. What is known of each job stays."""
    from types import SimpleNamespace

    from tests.support.scenario import training_job
    from tsunagu.api.podgroups import group_key
    from tsunagu.api.types import PodUsage
    from tsunagu.controller.groups import PodGroupTracker
    from tsunagu.controller.jobs import JobTracker
    from tsunagu.controller.scheduling.assume import AssumeCache
    from tsunagu.controller.scheduling.inflight import InFlight
    from tsunagu.controller.scheduling.queue import SchedulingQueue
    from tsunagu.controller.startup.duties import LeaderDuties

    jobs = JobTracker()
    body = training_job("team", "train", None, replicas=1, gpus=1)
    body["metadata"].update(uid="u", generation=1, creationTimestamp="2026-01-01T00:00:00Z")
    jobs.observe(body)
    key = ("team", "train")
    tracked = jobs.get(key)
    assert tracked is not None
    assert tracked.spec is not None
    spec = tracked.spec
    queue, assumed, inflight = SchedulingQueue(), AssumeCache(), InFlight()
    queue.add(spec)
    assumed.assume(key, (PodUsage("team", "train-0", "n1", 1, terminal=False),))
    inflight.add(key)
    jobs.not_before[key], jobs.bind_failures[key], jobs.just_bound[key] = 1.0, 2, 3.0
    jobs.dirty.add(key)
    jobs.refused[key] = 1
    groups = PodGroupTracker()
    group = group_key("team", "ring")
    groups.state(group).requested = ("ring-0",)
    inflight.add(group)
    operator = SimpleNamespace(
        jobs=jobs, queue=queue, assumed=assumed, inflight=inflight, groups=groups
    )
    LeaderDuties(operator)._clear_term_state()  # type: ignore[arg-type]
    assert (len(queue), assumed.pods(), len(inflight)) == (0, [], 0)
    assert groups.states == {}, "a pod group's gang being bound is forgotten too"
    assert inflight.idle.is_set()  # the report writer no longer waits for gangs
    assert (jobs.not_before, jobs.bind_failures, jobs.just_bound, jobs.dirty) == ({}, {}, {}, set())
    assert jobs.refused == {key: 1}
    assert key in jobs
