"""The echo side of the probe: every byte received on a connection is sent straight back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from tsunagu.probe.peers import Endpoint

log = logging.getLogger(__name__)

_READ_CHUNK = 4096


class EchoServer:
    """A TCP echo server on asyncio that closes its open connections when it stops."""

    def __init__(self, listen: Endpoint) -> None:
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> Endpoint:
        """Starts listening and returns the bound address (port 0 picks a free port)."""
        self._server = await asyncio.start_server(
            self._serve, host=self._listen.host, port=self._listen.port
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        return Endpoint(host=host, port=port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nagle's algorithm would hold back a small echo waiting for more data; asyncio already
        # disables it for TCP, setting it again keeps that independent of the Python version.
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connections.add(writer)
        try:
            while chunk := await reader.read(_READ_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError) as error:
            log.debug("echo connection from %s ended: %s", writer.get_extra_info("peername"), error)
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
