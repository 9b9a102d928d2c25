"""The delay proxy of the tests (tests/support/delay_proxy.py): a partition cuts open connections
and refuses new ones until it heals, on the same port."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.support.delay_proxy import DelayProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def echoes(connection: socket.socket, data: bytes = b"ping") -> bool:
    """Whether `data` comes back; False when the connection ends instead."""
    try:
        connection.sendall(data)
        return connection.recv(4096) == data
    except OSError:
        return False


def test_a_partition_cuts_open_connections_and_refuses_new_ones_until_it_heals(
    echo_port: int,
) -> None:
    with DelayProxy("127.0.0.1", echo_port) as proxy:
        port = proxy.port
        before = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert echoes(before)

        proxy.partition(True)
        assert proxy.partitioned
        assert not echoes(before)
        during = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert not echoes(during)

        proxy.partition(False)
        after = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert echoes(after)
        assert proxy.port == port
        for connection in (before, during, after):
            connection.close()
