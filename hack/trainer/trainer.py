"""A distributed program in plain Python: rendezvous, ring all-reduce, a dataset read.

It reads what tsunagu puts in every pod (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT and the
TSUNAGU_DATASET_* variables) the way torch.distributed's env:// rendezvous does:

1. rendezvous: rank 0 listens on MASTER_PORT; every other rank connects to MASTER_ADDR (the
   headless Service's DNS name of rank 0) and sends the address it listens on for its peers;
   rank 0 answers everyone with the table of all ranks;
2. all-reduce: a ring, rank r sending to rank r+1 and receiving from r-1, WORLD_SIZE-1 steps,
   so every pair of neighbours really talks, whichever nodes they are on;
3. a dataset read: a few records over HTTP from TSUNAGU_DATASET_ENDPOINT (`?rank=R&limit=N`).

Each rank contributes rank+1 plus the records it read, and the reduced sum is checked against
the value every rank can compute itself; a mismatch or a timeout exits 1. Standard library only,
so the image is Debian's python3 and nothing else: ~116 MB uncompressed, built by one
debootstrap. PyTorch's CPU build (torch plus its gloo backend) is several hundred MB installed,
more than the whole image, and would be downloaded into every cold build.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time
import urllib.request
from typing import Any

RENDEZVOUS_TIMEOUT = float(os.environ.get("TRAINER_RENDEZVOUS_TIMEOUT", "120"))
RECORDS = int(os.environ.get("TRAINER_RECORDS", "3"))


def say(rank: int, text: str) -> None:
    print(f"[rank {rank}] {text}", flush=True)


def send_message(connection: socket.socket, payload: Any) -> None:
    data = json.dumps(payload).encode()
    connection.sendall(struct.pack("!I", len(data)) + data)


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def receive_message(connection: socket.socket) -> Any:
    (size,) = struct.unpack("!I", receive_exactly(connection, 4))
    return json.loads(receive_exactly(connection, size))


def connect_with_retry(host: str, port: int, rank: int) -> socket.socket:
    """Connects until the deadline: the peer's DNS name and listener appear in their own time."""
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return socket.create_connection((host, port), timeout=5)
        except OSError as error:
            last_error = error
            time.sleep(0.5)
    raise TimeoutError(f"rank {rank}: could not reach {host}:{port}: {last_error}")


def rendezvous(rank: int, world: int, master: str, port: int, peer_port: int) -> list[list[Any]]:
    """Returns the table [[host, port], …] indexed by rank."""
    if rank == 0:
        server = socket.create_server(("", port), backlog=world)
        server.settimeout(RENDEZVOUS_TIMEOUT)
        table: list[list[Any]] = [["", peer_port] for _ in range(world)]
        connections = []
        for _ in range(world - 1):
            connection, (host, _) = server.accept()
            hello = receive_message(connection)
            table[hello["rank"]] = [host, hello["port"]]
            connections.append(connection)
        hostname = socket.gethostname()
        say(rank, f"rendezvous at {master}:{port} complete: {world} ranks (this is {hostname})")
        for connection in connections:
            send_message(connection, table)
            connection.close()
        server.close()
        return table
    connection = connect_with_retry(master, port, rank)
    say(rank, f"connected to {master}:{port} ({connection.getpeername()[0]})")
    send_message(connection, {"rank": rank, "port": peer_port})
    table = receive_message(connection)
    connection.close()
    return table


def ring_all_reduce(
    rank: int, world: int, table: list[list[Any]], listener: socket.socket, value: int
) -> int:
    """Sum of every rank's value; each step forwards what came in the step before."""
    if world == 1:
        return value
    listener.settimeout(RENDEZVOUS_TIMEOUT)
    next_rank = (rank + 1) % world
    host, port = table[next_rank]
    # Rank 0 keeps its own address in the table as ""; its peers saw it through the Service.
    successor = connect_with_retry(host or os.environ["MASTER_ADDR"], port, rank)
    predecessor, _ = listener.accept()
    total, carried = value, value
    for _ in range(world - 1):
        send_message(successor, carried)
        carried = receive_message(predecessor)
        total += carried
    successor.close()
    predecessor.close()
    return total


def read_records(rank: int) -> list[Any]:
    endpoint = os.environ.get("TSUNAGU_DATASET_ENDPOINT")
    name = os.environ.get("TSUNAGU_DATASET_NAME", "")
    if not endpoint:
        say(rank, "no TSUNAGU_DATASET_ENDPOINT: training without data")
        return []
    url = f"{endpoint.rstrip('/')}/records?rank={rank}&limit={RECORDS}"
    with urllib.request.urlopen(url, timeout=30) as response:
        records = [json.loads(line) for line in response.read().decode().splitlines() if line]
    home = os.environ.get("TSUNAGU_DATASET_HOME_REGION", "?")
    local = os.environ.get("TSUNAGU_DATASET_LOCAL", "?")
    say(
        rank,
        f"read {len(records)} records of dataset {name} (home {home}, local={local}) from {url}",
    )
    return records


def main() -> int:
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    master = os.environ["MASTER_ADDR"]
    port = int(os.environ["MASTER_PORT"])
    region = os.environ.get("TSUNAGU_REGION", "?")
    say(rank, f"starting: world size {world}, region {region}, master {master}:{port}")
    listener = socket.create_server(("", 0), backlog=1)
    table = rendezvous(rank, world, master, port, listener.getsockname()[1])
    records = read_records(rank)
    counts = ring_all_reduce(rank, world, table, listener, len(records))
    total = ring_all_reduce(rank, world, table, listener, rank + 1 + len(records))
    listener.close()
    expected = world * (world + 1) // 2 + counts
    say(rank, f"all-reduce sum = {total} (expected {expected}) over {world} ranks")
    if total != expected:
        say(rank, "all-reduce mismatch")
        return 1
    say(rank, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
