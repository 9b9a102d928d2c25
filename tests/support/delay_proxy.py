"""A TCP proxy on loopback that delays every byte by a one-way delay per direction.

Used to give two probes on one machine a "distance": with a one-way delay `d` in each direction
a round trip through the proxy takes `2·d` longer (RTT grows by twice the delay). `set_rtt(ms)`
sets both directions to half of it.

Ordering is preserved: each direction is a FIFO of (release time, bytes). When the delay is
lowered, bytes already queued keep their later release time and newer bytes wait behind them, so
the RTT falls to the new value within one old delay, never out of order.

`partition(True)` cuts the path: every open connection is closed, and new ones are closed as soon
as they are accepted (a client sees its connection drop, as to a dead host), until
`partition(False)`. The port stays the proxy's meanwhile, so the path heals on the same address.

The proxy runs its own event loop in a daemon thread, so synchronous tests, asyncio tests and
other threads can all use it; `set_delay` and `partition` are safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass

_CHUNK = 65536


@dataclass(frozen=True)
class Delays:
    upstream_seconds: float  # client → target
    downstream_seconds: float  # target → client

    @property
    def added_rtt_seconds(self) -> float:
        return self.upstream_seconds + self.downstream_seconds


class DelayProxy:
    """`with DelayProxy("127.0.0.1", port, delay_seconds=0.0075) as proxy: proxy.port ...`"""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        delay_seconds: float = 0.0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listen = (listen_host, listen_port)
        self._lock = threading.Lock()
        self._delays = Delays(delay_seconds, delay_seconds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._partitioned = False
        self._open: set[asyncio.StreamWriter] = set()
        # Connections accepted (whether or not passed on): who used the path, and when not.
        self.accepted = 0
        self.host = listen_host
        self.port = 0

    # -- delay control (any thread) ----------------------------------------------------------

    @property
    def delays(self) -> Delays:
        with self._lock:
            return self._delays

    def set_delay(self, one_way_seconds: float, downstream_seconds: float | None = None) -> None:
        """Sets the one-way delay; one value for both directions unless the second is given."""
        down = one_way_seconds if downstream_seconds is None else downstream_seconds
        if one_way_seconds < 0 or down < 0:
            raise ValueError(f"delay must be ≥ 0 s, got {one_way_seconds}, {down}")
        with self._lock:
            self._delays = Delays(one_way_seconds, down)

    def retarget(self, host: str, port: int) -> None:
        """Where new connections go from now on (open ones keep their target)."""
        with self._lock:
            self.target_host, self.target_port = host, port

    def set_rtt_ms(self, added_rtt_ms: float) -> None:
        """Adds `added_rtt_ms` to every round trip: half of it in each direction."""
        self.set_delay(added_rtt_ms / 2000.0)

    @property
    def partitioned(self) -> bool:
        with self._lock:
            return self._partitioned

    def partition(self, on: bool, timeout: float = 10.0) -> None:
        """Cuts the path (`on`) or heals it. Returns once every open connection is closed."""
        with self._lock:
            self._partitioned = on
        loop = self._loop
        if on and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._cut_all(), loop).result(timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> DelayProxy:
        self._thread = threading.Thread(
            target=self._run_loop, name=f"delay-proxy->{self.target_port}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(
                f"delay proxy to port {self.target_port} did not start in {timeout}s"
            )
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the event loop thread ---------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, host=self._listen[0], port=self._listen[1])
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as error:  # handed to the starting thread, which re-raises it
            self._start_error = error
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _cut_all(self) -> None:
        for writer in list(self._open):
            writer.close()
        for task in list(self._pipes):
            task.cancel()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        with self._lock:
            target = (self.target_host, self.target_port)
            partitioned = self._partitioned
            self.accepted += 1
        if partitioned:
            client_w.close()
            return
        try:
            target_r, target_w = await asyncio.open_connection(*target)
        except OSError:
            # Like a real network path to a dead host: the client sees its connection drop.
            client_w.close()
            return
        if self.partitioned:  # cut while the target was being reached
            for writer in (client_w, target_w):
                writer.close()
            return
        for writer in (client_w, target_w):
            _no_delay(writer)
            self._open.add(writer)
        up = asyncio.create_task(self._pipe(client_r, target_w, upstream=True))
        down = asyncio.create_task(self._pipe(target_r, client_w, upstream=False))
        for task in (up, down):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)
        # Either side closing ends the whole connection, as one TCP path would.
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for writer in (client_w, target_w):
            writer.close()
            self._open.discard(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                release_at, chunk = await queue.get()
                if not chunk:
                    return
                wait = release_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        deliverer = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(_CHUNK)
                delays = self.delays
                delay = delays.upstream_seconds if upstream else delays.downstream_seconds
                queue.put_nowait((loop.time() + delay, chunk))
                if not chunk:
                    break
            await deliverer  # flush what is still in flight before reporting the end
        except (ConnectionError, OSError):
            pass  # a reset on either side ends the pipe like an EOF
        finally:
            deliverer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await deliverer


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
