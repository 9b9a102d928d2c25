"""The measuring side of the probe: timed round trips to one peer over a persistent connection.

A persistent connection measures the path, not the TCP handshake, and costs the peer one socket.
Each payload carries a sequence number so a late echo of an earlier (timed-out) round trip can
never be taken for the current one; after any failure the connection is dropped and reopened,
because its state is then unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from dataclasses import dataclass

from tsunagu.probe.metrics import FailureReason, ProbeMetrics
from tsunagu.probe.peers import Endpoint

log = logging.getLogger(__name__)

_MAGIC = b"tsunagu!"
PAYLOAD_SIZE = 8 + len(_MAGIC)


def payload(sequence: int) -> bytes:
    return struct.pack("!Q", sequence % 2**64) + _MAGIC


class RoundTripFailed(Exception):
    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ProberSettings:
    interval_seconds: float = 0.5
    timeout_seconds: float = 1.0


def _connect_failure(error: OSError) -> FailureReason:
    if isinstance(error, ConnectionRefusedError) or error.errno == errno.ECONNREFUSED:
        return FailureReason.REFUSED
    return FailureReason.UNREACHABLE


class PeerProber:
    """Measures one ordered pair (own region → peer) until cancelled."""

    def __init__(
        self,
        source_region: str,
        target_region: str,
        endpoint: Endpoint,
        settings: ProberSettings,
        metrics: ProbeMetrics,
    ) -> None:
        self.source_region = source_region
        self.target_region = target_region
        self.endpoint = endpoint
        self._settings = settings
        self._metrics = metrics
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sequence = 0
        self._last_failure: FailureReason | None = None

    async def run(self) -> None:
        """Measures on a fixed cadence (no drift from the time a round trip takes)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                await self.measure_once()
                next_at += self._settings.interval_seconds
                # After a stall (a suspended laptop, a long timeout) skip the missed slots instead
                # of firing them back to back.
                next_at = max(next_at, loop.time())
                await asyncio.sleep(next_at - loop.time())
        finally:
            await self._disconnect()

    async def measure_once(self) -> float | None:
        """One round trip; returns its RTT in seconds, or None after counting the failure."""
        try:
            rtt = await self._round_trip()
        except RoundTripFailed as failure:
            await self._disconnect()
            self._metrics.count_failure(self.source_region, self.target_region, failure.reason)
            # Log transitions, not every failed second of a peer that is down.
            if failure.reason is not self._last_failure:
                log.warning(
                    "probe %s -> %s (%s): %s",
                    self.source_region,
                    self.target_region,
                    self.endpoint,
                    failure,
                )
            self._last_failure = failure.reason
            return None
        if self._last_failure is not None:
            log.info("probe %s -> %s: measuring again", self.source_region, self.target_region)
            self._last_failure = None
        self._metrics.observe(self.source_region, self.target_region, rtt)
        return rtt

    async def _round_trip(self) -> float:
        reader, writer = await self._connection()
        self._sequence += 1
        sent = payload(self._sequence)
        timeout = self._settings.timeout_seconds
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                writer.write(sent)
                await writer.drain()
                received = await reader.readexactly(PAYLOAD_SIZE)
        except TimeoutError as error:
            raise RoundTripFailed(FailureReason.TIMEOUT, f"no echo within {timeout}s") from error
        except asyncio.IncompleteReadError as error:
            raise RoundTripFailed(FailureReason.CLOSED, "peer closed the connection") from error
        except (ConnectionError, OSError) as error:
            raise RoundTripFailed(
                FailureReason.CLOSED, str(error) or type(error).__name__
            ) from error
        elapsed = time.perf_counter() - started
        if received != sent:
            raise RoundTripFailed(FailureReason.MISMATCH, f"expected {sent!r}, got {received!r}")
        return elapsed

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is not None and self._writer is not None:
            return self._reader, self._writer
        timeout = self._settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    self.endpoint.host, self.endpoint.port
                )
        except TimeoutError as error:
            raise RoundTripFailed(
                FailureReason.CONNECT_TIMEOUT, f"connect not done within {timeout}s"
            ) from error
        except socket.gaierror as error:
            raise RoundTripFailed(FailureReason.UNREACHABLE, f"resolve: {error}") from error
        except OSError as error:
            raise RoundTripFailed(_connect_failure(error), f"connect: {error}") from error
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        return reader, writer

    async def _disconnect(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
