"""The operator's own pod watch: reading a watch stream, keeping the view's pods, resuming after
the last event handed over, and listing again when the API server says the version is gone.

The Kubernetes API is replaced here by a scripted stand-in; the real watch is exercised by every
integration test (all pod state reaches the operator through it)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tsunagu.controller.cluster import podwatch
from tsunagu.controller.cluster.client import Page
from tsunagu.controller.cluster.podwatch import PodWatch, list_pods, observe_pods
from tsunagu.controller.cluster.watchstream import Gone, WatchStream
from tsunagu.controller.settings import OperatorSettings
from tsunagu.controller.startup.operator import Operator


def pod(name: str, version: str, node: str | None = None, phase: str = "Pending") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "resourceVersion": version,
            "labels": {"tsunagu.io/job": "train", "tsunagu.io/rank": name.rsplit("-", 1)[1]},
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "t", "resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": phase},
    }


def line(kind: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": body}).encode() + b"\n"


class ScriptedResponse:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def stream(self, amount: int, decode_content: bool) -> Iterator[bytes]:
        yield from self.chunks

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_stream_splits_events_across_chunks() -> None:
    data = line("ADDED", pod("train-0", "11")) + line("MODIFIED", pod("train-0", "12", "n1"))
    data += line("BOOKMARK", {"metadata": {"resourceVersion": "15"}})
    response = ScriptedResponse([data[:37], data[37:200], data[200:]])
    stream = WatchStream(response)
    batches = list(stream.batches())
    events = [event for batch in batches for event in batch]
    assert [kind for kind, _ in events] == ["ADDED", "MODIFIED", "BOOKMARK"]
    assert events[1][1]["spec"]["nodeName"] == "n1"
    assert events[2][1]["metadata"]["resourceVersion"] == "15"  # where a bookmark resumes
    assert response.closed


def test_an_error_event_ends_the_stream_with_gone() -> None:
    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    stream = WatchStream(ScriptedResponse([line("ERROR", expired)]))
    with pytest.raises(Gone, match="410 Expired"):
        list(stream.batches())


class ReleasedResponse(ScriptedResponse):
    """As urllib3 ≥ 2.3 does once the body was read to its end: the connection went back to the
    pool, and `shutdown` raises."""

    def shutdown(self) -> None:
        raise RuntimeError("Cannot shutdown as connection has already been released to the pool")


def test_a_410_is_not_hidden_by_a_connection_already_given_back() -> None:
    """After an API-server restart every older resourceVersion is 410: the watch must list
    again, not retry the same version for ever."""
    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    response = ReleasedResponse([line("ERROR", expired)])
    with pytest.raises(Gone, match="410 Expired"):
        list(WatchStream(response).batches())
    assert response.closed
    ended = ReleasedResponse([line("ADDED", pod("train-0", "11"))])
    assert len(list(WatchStream(ended).batches())) == 1  # a stream that ended ends quietly


class ScriptedKube:
    """Answers list_page and watch from scripts; `call` runs in the loop's thread pool."""

    def __init__(
        self, pages: list[Page], watches: list[list[bytes] | Exception], list_failures: int = 0
    ) -> None:
        self.pages = pages
        self.watches = watches
        self.list_failures = list_failures
        self.watched_from: list[str] = []

    async def call(self, function: Any, *args: Any) -> Any:
        return await asyncio.to_thread(function, *args)

    def list_page(self, kind: str, token: str | None) -> Page:
        assert kind == "pods"
        if self.list_failures:
            self.list_failures -= 1
            raise ConnectionRefusedError("API server restarting")
        return self.pages[int(token or 0)]

    def watch(self, kind: str, resource_version: str, timeout_seconds: int) -> WatchStream:
        self.watched_from.append(resource_version)
        script = self.watches.pop(0) if self.watches else [b""]
        if isinstance(script, Exception):
            raise script
        return WatchStream(ScriptedResponse(script))


def operator(kube: Any) -> Operator:
    return Operator(OperatorSettings(), kube)


def test_observing_pods_records_gpus_and_wakes_the_loop_when_they_come_free() -> None:
    async def scenario() -> None:
        op = operator(ScriptedKube([], []))
        observe_pods(
            op.cluster.view, [("ADDED", pod("train-0", "1", "n1", "Running"))], op.pods_changed
        )
        assert op.cluster.view.pods[("team", "train-0")].gpus == 8
        assert op.cluster.view.pods_of(("team", "train"))["train-0"].node_name == "n1"
        op.queue._wake.clear()
        observe_pods(
            op.cluster.view, [("MODIFIED", pod("train-0", "2", "n1", "Succeeded"))], op.pods_changed
        )
        assert op.queue._wake.is_set()
        observe_pods(
            op.cluster.view, [("DELETED", pod("train-0", "3", "n1", "Succeeded"))], op.pods_changed
        )
        assert op.cluster.view.pods == {}
        assert op.cluster.view.pods_of(("team", "train")) == {}

    asyncio.run(scenario())


def test_a_fresh_list_forgets_pods_whose_deletion_the_watch_missed() -> None:
    async def scenario() -> None:
        pages = [
            Page([pod("train-0", "20", "n1", "Running")], "1", "25"),
            Page([pod("train-2", "21", "n2", "Running")], None, "25"),
        ]
        op = operator(ScriptedKube(pages, []))
        running = [("ADDED", pod(f"train-{rank}", "5", "n1", "Running")) for rank in (0, 1, 3)]
        observe_pods(op.cluster.view, running, op.pods_changed)
        op.queue._wake.clear()
        assert await list_pods(op.cluster.client, op.cluster.view, op.pods_changed) == "25"
        assert sorted(op.cluster.view.pods_of(("team", "train"))) == ["train-0", "train-2"]
        assert sorted(name for _, name in op.cluster.view.pods) == ["train-0", "train-2"]
        assert op.queue._wake.is_set()  # the GPUs of train-1 and train-3 came free

    asyncio.run(scenario())


def test_the_watch_resumes_after_the_last_event_and_lists_again_when_gone() -> None:
    """A dropped connection resumes from the last event seen; 410 Gone lists again (and keeps
    trying when that list fails), then watches from the list's version."""
    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    watches: list[list[bytes] | Exception] = [
        [line("ADDED", pod("train-0", "11")), line("MODIFIED", pod("train-0", "12", "n1"))],
        ConnectionResetError("reset"),
        [line("ERROR", expired)],
        [line("ADDED", pod("train-5", "31", "n3"))],
    ]
    pages = [Page([pod("train-1", "29", "n2", "Running")], None, "30")]
    kube = ScriptedKube(pages, watches, list_failures=1)  # the first list after 410 fails

    async def scenario() -> None:
        op = operator(kube)
        watch = PodWatch(op.cluster.client, op.cluster.view, op.pods_changed, "10")
        task = asyncio.create_task(watch.run())
        for _ in range(200):
            if "train-5" in op.cluster.view.pods_of(("team", "train")):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        assert sorted(op.cluster.view.pods_of(("team", "train"))) == ["train-1", "train-5"]
        assert watch.resource_version == "31"

    def restarts(reason: str) -> float:
        sample = REGISTRY.get_sample_value("tsunagu_pod_watch_restarts_total", {"reason": reason})
        return sample or 0.0

    before = {reason: restarts(reason) for reason in ("Ended", "Expired", "Failed")}
    asyncio.run(scenario())
    assert kube.watched_from[:4] == ["10", "12", "12", "30"]
    after = {reason: restarts(reason) - before[reason] for reason in before}
    assert after["Expired"] == 1
    assert after["Failed"] == 2  # the dropped connection and the failed list
    # The first watch, and any more the scripted API ended before the task was cancelled.
    assert after["Ended"] >= 1


def test_the_view_is_current_once_a_watch_has_been_open_a_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new term waits for this: while the API server is away no watch is open, and once one
    is open again what was missed arrives at once."""
    monkeypatch.setattr(podwatch, "CAUGHT_UP_SECONDS", 0.2)
    monkeypatch.setattr(podwatch, "POLL_SECONDS", 0.01)

    class Held(ScriptedResponse):
        def stream(self, amount: int, decode_content: bool) -> Iterator[bytes]:
            yield line("ADDED", pod("train-0", "11"))
            while not self.closed:  # the stream stays open, as a watch does
                time.sleep(0.01)

    held = Held([])

    class Restarting(ScriptedKube):
        def watch(self, kind: str, resource_version: str, timeout_seconds: int) -> WatchStream:
            self.watched_from.append(resource_version)
            if len(self.watched_from) <= 2:
                raise ConnectionRefusedError("the API server is restarting")
            return WatchStream(held)

    kube = Restarting([], [])

    async def scenario() -> float:
        op = operator(kube)
        watch_ = PodWatch(op.cluster.client, op.cluster.view, op.pods_changed, "10")
        task = asyncio.create_task(watch_.run())
        started = time.monotonic()
        await asyncio.wait_for(watch_.caught_up(), timeout=10)
        waited = time.monotonic() - started
        assert watch_.streaming_since is not None
        assert ("team", "train-0") in op.cluster.view.pods
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        held.closed = True
        return waited

    waited = asyncio.run(scenario())
    # Two refusals (0.5 s, then 1 s: the backoff) before the watch opened, then 0.2 s open.
    assert waited >= 1.5 + 0.2
    assert kube.watched_from == ["10", "10", "10"]
