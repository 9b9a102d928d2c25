"""One region's probe: the echo server, the metrics endpoint and a prober per peer region."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from tsunagu.probe.echo import EchoServer
from tsunagu.probe.metrics import ProbeMetrics
from tsunagu.probe.peers import Endpoint, PeersError, PeersFile, merge_peers
from tsunagu.probe.prober import PeerProber, ProberSettings

log = logging.getLogger(__name__)


class ProbeStartError(OSError):
    """An address could not be bound; the message names the flag and the address."""


@dataclass(frozen=True)
class ProbeConfig:
    region: str
    listen: Endpoint
    metrics_listen: Endpoint
    static_peers: Mapping[str, Endpoint] = field(default_factory=lambda: MappingProxyType({}))
    peers_file: Path | None = None
    prober: ProberSettings = field(default_factory=ProberSettings)
    peers_check_seconds: float = 2.0


class Probe:
    """Runs until `stop()`; `start()` raises PeersError or ProbeStartError (a busy port)."""

    def __init__(self, config: ProbeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = ProbeMetrics(registry if registry is not None else CollectorRegistry())
        self._echo = EchoServer(config.listen)
        self._peers_file = PeersFile(config.peers_file) if config.peers_file else None
        self._file_peers: dict[str, Endpoint] = {}
        self._probers: dict[str, tuple[PeerProber, asyncio.Task[None]]] = {}
        # Cancelled probers still close their connection; keep them referenced until done.
        self._retiring: set[asyncio.Task[None]] = set()
        self._metrics_server: WSGIServer | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._last_peers_error: str | None = None
        self.echo_address: Endpoint | None = None
        self.metrics_address: Endpoint | None = None

    @property
    def peers(self) -> dict[str, Endpoint]:
        """The peers being measured right now, region → address."""
        return {region: prober.endpoint for region, (prober, _) in self._probers.items()}

    async def start(self) -> None:
        if self._peers_file is not None:
            self._file_peers = self._peers_file.read()  # a bad file at start-up is fatal
        try:
            self.echo_address = await self._echo.start()
        except OSError as error:
            raise _bind_error("--listen", self.config.listen, error) from error
        try:
            server, _thread = start_http_server(
                self.config.metrics_listen.port,
                addr=self.config.metrics_listen.host,
                registry=self.metrics.registry,
            )
        except OSError as error:
            await self._echo.stop()
            raise _bind_error("--metrics-listen", self.config.metrics_listen, error) from error
        self._metrics_server = server
        host, port = server.server_address[:2]
        self.metrics_address = Endpoint(host=str(host), port=int(port))
        self._apply_peers()
        if self._peers_file is not None:
            self._watch_task = asyncio.create_task(self._watch_peers_file(), name="peers-file")
        log.info(
            "probe %s: echo on %s, metrics on %s, peers %s",
            self.config.region,
            self.echo_address,
            self.metrics_address,
            {region: str(endpoint) for region, endpoint in self.peers.items()} or "none",
        )

    async def stop(self) -> None:
        tasks = [task for _, task in self._probers.values()] + list(self._retiring)
        if self._watch_task is not None:
            tasks.append(self._watch_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probers.clear()
        self._watch_task = None
        await self._echo.stop()
        if self._metrics_server is not None:
            server, self._metrics_server = self._metrics_server, None
            # shutdown() waits for the serving thread's loop to notice; keep the event loop free.
            await asyncio.to_thread(server.shutdown)
            server.server_close()

    def check_peers_file(self) -> bool:
        """Re-reads the peers file now; returns True when the set of peers changed."""
        if self._peers_file is None:
            return False
        try:
            changed = self._peers_file.read_if_changed()
        except PeersError as error:
            if str(error) != self._last_peers_error:
                log.error("%s; still measuring the previous peers", error)
                self._last_peers_error = str(error)
            return False
        self._last_peers_error = None
        if changed is None:
            return False
        self._file_peers = changed
        return self._apply_peers()

    async def _watch_peers_file(self) -> None:
        while True:
            await asyncio.sleep(self.config.peers_check_seconds)
            self.check_peers_file()

    def _apply_peers(self) -> bool:
        wanted = merge_peers(self.config.region, self.config.static_peers, self._file_peers)
        current = self.peers
        if wanted == current:
            return False
        for region, endpoint in current.items():
            if wanted.get(region) != endpoint:
                _, task = self._probers.pop(region)
                task.cancel()
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
                self.metrics.forget_peer(self.config.region, region)
                log.info(
                    "probe %s: stopped measuring %s (%s)", self.config.region, region, endpoint
                )
        for region, endpoint in wanted.items():
            if region in self._probers:
                continue
            prober = PeerProber(
                self.config.region, region, endpoint, self.config.prober, self.metrics
            )
            task = asyncio.create_task(prober.run(), name=f"probe-{region}")
            self._probers[region] = (prober, task)
            log.info("probe %s: measuring %s at %s", self.config.region, region, endpoint)
        self.metrics.peers.set(len(self._probers))
        return True

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


def _bind_error(flag: str, address: Endpoint, error: OSError) -> ProbeStartError:
    return ProbeStartError(f"{flag} {address}: cannot listen: {error.strerror or error}")


@contextlib.asynccontextmanager
async def running_probe(
    config: ProbeConfig, registry: CollectorRegistry | None = None
) -> AsyncIterator[Probe]:
    """`async with running_probe(config) as probe:` for tests and embedding."""
    probe = Probe(config, registry)
    await probe.start()
    try:
        yield probe
    finally:
        await probe.stop()
