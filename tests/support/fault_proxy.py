"""An HTTP proxy in front of the API server that injects faults at rates the test sets.

The operator under test talks plain HTTP to the proxy on loopback (a kubeconfig of its own,
`write_kubeconfig`); the proxy talks TLS to the API server with the cluster's client
certificate. Each request travels on a connection of its own (the proxy answers
`Connection: close`), so every request is one decision:

- `drop`: the connection is closed before the request is sent on (the client sees a reset);
- `lose_answer`: the request is sent on and acted upon, but its answer never arrives (the
  ambiguous failure: did the pod get created?);
- `delay`: the request waits `delay_seconds` before it is sent on;
- `error`: a 500 or 503 Status, the request not sent on;
- `throttle`: a 429 with `Retry-After: 1`, the request not sent on;
- `cut_watch`: each second, each open watch stream is cut with this probability (whenever it
  was opened), in the middle of whatever it was sending (an event, a chunk header);
- `lag_watch_seconds` with `lag_watch`: a watch whose path contains one of `lag_watch` hears
  everything that late (each chunk of its answer is released that long after it arrived, in
  order): a client whose view of those objects trails the API server, as behind a loaded
  API server or a slow link.

`blackhole(True)` is a partition: new connections are accepted and never answered, and what
travels on open ones is discarded (when the partition ends, those are closed: their streams are
broken). Faults injected are counted by kind in `injected`; every request that reached the API
server is in `forwarded`, with the time it was sent on.

Like `delay_proxy.DelayProxy`, it runs its own event loop in a daemon thread, so synchronous
tests can set rates from their own thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

_CHUNK = 65536
_HEAD_LIMIT = 1 << 20
KINDS = ("drop", "lose_answer", "delay", "error", "throttle")


@dataclass
class FaultRates:
    """Probability of each fault per request (a watch is also a request), 0 to 1; of a cut per
    second for an open watch."""

    drop: float = 0.0
    lose_answer: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 1.0
    error: float = 0.0
    throttle: float = 0.0
    cut_watch: float = 0.0
    # Requests whose path contains one of these are never faulted (e.g. the Lease, to keep the
    # election out of a test about binding); empty: every request may be.
    spare: tuple[str, ...] = ()
    # Paths (exact) answered 404, as an API server without those resources would: e.g. the
    # tsunagu.io group, to start an operator on a cluster without its CRDs.
    hide: tuple[str, ...] = ()
    # Watches whose path contains one of these hear every event this many seconds late.
    lag_watch: tuple[str, ...] = ()
    lag_watch_seconds: float = 0.0


def upstream_tls(configuration: Any) -> ssl.SSLContext:
    """TLS to the API server from a kubernetes client Configuration (kubeconfig loaded)."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class FaultProxy:
    def __init__(
        self,
        target_url: str,
        tls: ssl.SSLContext | None,
        rates: FaultRates | None = None,
        seed: int = 1,
    ) -> None:
        parts = urlsplit(target_url)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = tls if parts.scheme == "https" else None
        self._lock = threading.Lock()
        self._rates = rates or FaultRates()
        self._random = random.Random(seed)
        self._blackhole = False
        self._blackholed: set[asyncio.StreamWriter] = set()
        self.injected: collections.Counter[str] = collections.Counter()
        self.requests = 0
        # (time.time(), method, path) of every request sent on to the API server: what of the
        # client's reached the server, and when.
        self.forwarded: list[tuple[float, str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- control (any thread) ------------------------------------------------------------------
    def set_rates(self, rates: FaultRates) -> None:
        with self._lock:
            self._rates = rates

    def blackhole(self, on: bool) -> None:
        """Partitions (True) or reconnects (False) whoever talks through the proxy."""
        with self._lock:
            self._blackhole = on
        if not on and self._loop is not None:
            self._loop.call_soon_threadsafe(self._close_blackholed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig that reaches the API server through this proxy (no credentials: the
        proxy holds them)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("fault proxy did not start")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _close_blackholed(self) -> None:
        for writer in list(self._blackholed):
            writer.close()
        self._blackholed.clear()

    # -- one request ---------------------------------------------------------------------------
    def _choose(self, watch: bool, path: str) -> str | None:
        with self._lock:
            rates = self._rates
            self.requests += 1
            if any(spared in path for spared in rates.spare):
                return None
            draw = self._random.random()
            for kind in KINDS:
                rate = getattr(rates, kind)
                if draw < rate:
                    self.injected[kind] += 1
                    return kind
                draw -= rate
        return None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(client_r, client_w)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(task)
            client_w.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._blackhole:
            await self._swallow(client_r, client_w)
            return
        head = await client_r.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        target = request_line.split(" ")[1] if " " in request_line else "/"
        query = target.partition("?")[2].lower()
        watch = "watch=true" in query or "watch=1" in query  # the Python client sends "True"
        if target.split("?", 1)[0] in self._rates.hide:
            await _answer(client_w, 404)
            return
        fault = self._choose(watch, target)
        if fault == "drop":
            return
        if fault == "error":
            await _answer(client_w, self._random.choice((500, 503)))
            return
        if fault == "throttle":
            await _answer(client_w, 429, {"Retry-After": "1"})
            return
        if fault == "delay":
            await asyncio.sleep(self._rates.delay_seconds)
        upstream_r, upstream_w = await asyncio.open_connection(
            self.target_host, self.target_port, ssl=self.tls, limit=_HEAD_LIMIT
        )
        try:
            method = request_line.split(" ", 1)[0]
            # Admitted or partitioned at one instant, under the lock `blackhole` takes: a request
            # recorded here was let through before any partition that began after it.
            with self._lock:
                partitioned = self._blackhole
                if not partitioned:
                    self.forwarded.append((time.time(), method, target))
            if partitioned:  # the partition began while this request waited
                self._blackholed.add(client_w)
                return
            upstream_w.write(_closing(head))
            up = asyncio.create_task(_quietly(self._pipe(client_r, upstream_w)))
            rates = self._rates
            lag = (
                rates.lag_watch_seconds
                if watch and any(lagged in target for lagged in rates.lag_watch)
                else 0.0
            )
            down = asyncio.create_task(
                _quietly(
                    self._answer_back(upstream_r, client_w, lose=fault == "lose_answer", lag=lag)
                )
            )
            tasks = {up, down}
            cut = None
            if watch:
                cut = asyncio.create_task(self._cut_some_time())
                tasks.add(cut)
            try:
                await asyncio.wait(
                    {down, cut} if cut is not None else {down},
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:  # also when the proxy stops: no task of this connection is left behind
                for pending in tasks:
                    pending.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            upstream_w.close()
            if self._blackhole:
                self._blackholed.add(client_w)

    async def _cut_some_time(self) -> None:
        """Returns when this watch is to be cut: each second, at the current rate."""
        while True:
            await asyncio.sleep(1.0)
            with self._lock:
                if self._random.random() < self._rates.cut_watch:
                    self.injected["cut_watch"] += 1
                    return

    async def _answer_back(
        self,
        upstream: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        lose: bool,
        lag: float = 0.0,
    ) -> None:
        head = await upstream.readuntil(b"\r\n\r\n")
        if lose:
            return  # acted upon, never answered
        await self._write(client, _closing(head))
        if lag > 0:
            await self._pipe_late(upstream, client, lag)
        else:
            await self._pipe(upstream, client)

    async def _pipe_late(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lag: float
    ) -> None:
        """Like `_pipe`, each chunk released `lag` seconds after it was read (a FIFO: reading
        goes on meanwhile, so chunks are late by the lag, not by the sum of lags)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    return
                await self._write(writer, chunk)

        releaser = asyncio.create_task(release())
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                queue.put_nowait((loop.time() + lag, chunk))
                if not chunk:
                    break
            await releaser
        finally:
            releaser.cancel()
            await asyncio.gather(releaser, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            chunk = await reader.read(_CHUNK)
            if not chunk:
                return
            await self._write(writer, chunk)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self._blackhole:
            self._blackholed.add(writer)
            return  # lost on the way
        writer.write(data)
        await writer.drain()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A partition: whatever arrives is lost, nothing is answered."""
        self._blackholed.add(writer)
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(_CHUNK):
                pass


async def _quietly(relay: Coroutine[Any, Any, None]) -> None:
    """A relay ends when either side goes away, however it goes (a reset, a TLS close)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await relay


def _closing(head: bytes) -> bytes:
    """The head with `Connection: close`: one request per connection, so each is one draw."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [
        line for line in lines[1:] if line.split(b":", 1)[0].strip().lower()
        not in (b"connection", b"keep-alive")
    ]  # fmt: skip
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


async def _answer(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str] | None = None
) -> None:
    reasons = {
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }
    body = (
        '{"kind":"Status","apiVersion":"v1","status":"Failure",'
        f'"message":"injected by the fault proxy","code":{status}}}'
    ).encode()
    lines = [
        f"HTTP/1.1 {status} {reasons[status]}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
