#!/usr/bin/env python3
"""Throughput of a real data-reading training loop against the RTT to its data.

A data server on 127.0.0.1 serves fixed-size records over HTTP/1.1 (kept-alive connections);
the loop reads them through the delay proxy (tests/support/delay_proxy.py), both in a child
process so that they never compete with the loop for the GIL. Each step needs `--requests`
records, fetched by a thread pool of `--concurrency` workers that keeps `--prefetch` steps in
flight ahead of the step being computed; the step's compute is real CPU work (SHA-256 over a
buffer, which releases the GIL like a framework's kernels do) sized to `--compute-ms`.

For each added RTT (0, 2, 5, 10, 15, 20, 40 ms) it measures steps per second, and prints the
measured loss beside the data-stall model's prediction for the same profile (dataProfile of the
same requests, concurrency, prefetch and the measured compute time), the reference curve, and
the model `tsunagu.placement.calibration` fits from the measurements.

    .venv/bin/python hack/bench_throughput.py [--prefetch 1 2] [--steps 40]

Why not PyTorch's DataLoader: torch from PyPI brings gigabytes of CUDA libraries (the CPU-only
wheel alone is a few hundred MB) for one class; its DataLoader with workers and prefetch_factor
is, for I/O-bound reads, the same thing as this pool (workers fetch batches ahead, the step
consumes them in order).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import math
import multiprocessing
import socket
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.delay_proxy import DelayProxy  # noqa: E402

from tsunagu.api.profiles import ThroughputSample  # noqa: E402
from tsunagu.api.types import DataProfile  # noqa: E402
from tsunagu.placement.calibration import calibrate  # noqa: E402
from tsunagu.placement.throughput import data_stall_loss, reference_loss  # noqa: E402

RTTS_MS = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 40.0)
# Each RTT's run is split into this many samples, so the fit sees the measurement's own noise.
CHUNKS = 3


# -- the data side (child process) ---------------------------------------------------------


def _serve(record_bytes: int, control: Connection) -> None:
    payload = bytes(range(256)) * (record_bytes // 256) + b"x" * (record_bytes % 256)

    class Records(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes: without this, Nagle holds the body back
            # until the client's delayed ACK (40 ms), whatever the RTT.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Records)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = DelayProxy("127.0.0.1", server.server_address[1]).start()
    control.send(proxy.port)
    while True:
        command = control.recv()
        if command is None:
            break
        proxy.set_rtt_ms(float(command))
        control.send("ok")
    proxy.stop()
    server.shutdown()


# -- the training side ---------------------------------------------------------------------


class Reader:
    """Fetches records over kept-alive HTTP connections, one per pool thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def fetch(self, index: int) -> int:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.local.connection = connection
        connection.request("GET", f"/record/{index}")
        body = connection.getresponse().read()
        return len(body)


class Prefetcher:
    """Keeps `depth` steps of record fetches in flight ahead of the step being computed."""

    def __init__(self, reader: Reader, pool: ThreadPoolExecutor, requests: int, depth: int):
        self.reader, self.pool, self.requests, self.depth = reader, pool, requests, depth
        self.next_index = 0
        self.in_flight: deque[list[Future[int]]] = deque()
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        start = self.next_index * self.requests
        self.in_flight.append(
            [self.pool.submit(self.reader.fetch, start + i) for i in range(self.requests)]
        )
        self.next_index += 1

    def next_batch(self) -> int:
        if self.depth == 0:
            self._submit()
        batch = self.in_flight.popleft()
        if self.depth > 0:
            self._submit()
        return sum(future.result() for future in batch)


def make_compute(target_ms: float) -> Callable[[], None]:
    """A fixed amount of SHA-256 work sized once to take about `target_ms`."""
    block = bytes(1 << 18)
    timings = []
    for _ in range(9):
        started = time.perf_counter()
        for _ in range(8):
            hashlib.sha256(block).digest()
        timings.append((time.perf_counter() - started) * 1000 / 8)
    # The median of short timings: a neighbour's burst on the shared machine skews a mean.
    repeat = max(1, round(target_ms / statistics.median(timings)))

    def compute() -> None:
        for _ in range(repeat):
            hashlib.sha256(block).digest()

    return compute


@dataclass(frozen=True)
class Measurement:
    rtt_ms: float
    steps_per_second: tuple[float, ...]  # one per chunk, as measured
    # Per chunk, the share of wall time the loop was not computing: waiting for its data.
    waiting_fractions: tuple[float, ...]
    compute_seconds: float  # mean compute time per step, timed around the compute alone

    def losses(self, waiting_at_zero: float) -> list[float]:
        """Loss per chunk against the run next to the data: 1 − T₀/T at equal compute speed.

        The machine is shared, so the CPU speed drifts by tens of percent within a minute; the
        share of time spent waiting is what the RTT changes, and comparing it (not raw steps/s)
        keeps that drift out of the loss.
        """
        return [1 - (1 - waiting) / (1 - waiting_at_zero) for waiting in self.waiting_fractions]


def run_steps(
    reader: Reader, args: argparse.Namespace, compute: Callable[[], None], rtt_ms: float
) -> Measurement:
    # Slower steps at long RTTs: fewer of them keep each point to a few seconds.
    steps = max(CHUNKS * 6, int(args.steps * min(1.0, 20.0 / max(rtt_ms, 20.0))))
    per_chunk = steps // CHUNKS
    with ThreadPoolExecutor(args.concurrency) as pool:
        prefetcher = Prefetcher(reader, pool, args.requests, args.prefetch)
        for _ in range(3):  # warm-up: connections opened, pipeline filled
            prefetcher.next_batch()
            compute()
        rates, waiting, total_computing = [], [], 0.0
        for _ in range(CHUNKS):
            started = time.perf_counter()
            computing = 0.0
            for _ in range(per_chunk):
                prefetcher.next_batch()
                before = time.perf_counter()
                compute()
                computing += time.perf_counter() - before
            wall = time.perf_counter() - started
            rates.append(per_chunk / wall)
            waiting.append(1 - computing / wall)
            total_computing += computing
        for batch in prefetcher.in_flight:
            for future in batch:
                future.result()
    return Measurement(rtt_ms, tuple(rates), tuple(waiting), total_computing / (per_chunk * CHUNKS))


def measure(
    args: argparse.Namespace, compute: Callable[[], None]
) -> tuple[list[Measurement], float]:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(args.record_bytes, child), daemon=True)
    server.start()
    try:
        reader = Reader(parent.recv())
        runs: dict[float, list[Measurement]] = {}
        # Up the RTTs and back down: a drift of the shared machine's speed over the run then
        # weighs on every RTT alike instead of on the last ones.
        for rtt in (*RTTS_MS, *reversed(RTTS_MS)):
            parent.send(rtt)
            parent.recv()
            runs.setdefault(rtt, []).append(run_steps(reader, args, compute, rtt))
    finally:
        parent.send(None)
        server.join(10)
    results = [_merge(rtt, measurements) for rtt, measurements in runs.items()]
    return results, statistics.fmean(results[0].waiting_fractions)


def _merge(rtt_ms: float, measurements: list[Measurement]) -> Measurement:
    return Measurement(
        rtt_ms,
        tuple(rate for m in measurements for rate in m.steps_per_second),
        tuple(waiting for m in measurements for waiting in m.waiting_fractions),
        statistics.fmean(m.compute_seconds for m in measurements),
    )


def report(args: argparse.Namespace, results: list[Measurement], waiting_at_zero: float) -> None:
    compute_seconds = statistics.fmean(m.compute_seconds for m in results)
    # Steps per second next to the data at the run's mean compute speed.
    baseline = (1 - waiting_at_zero) / compute_seconds
    profile = DataProfile(
        bytes_per_step=args.requests * args.record_bytes,
        requests_per_step=args.requests,
        request_concurrency=args.concurrency,
        step_compute_seconds=compute_seconds,
        prefetch_depth=args.prefetch,
    )
    samples = [
        ThroughputSample(m.rtt_ms, baseline * (1 - loss))
        for m in results
        if m.rtt_ms > 0
        for loss in m.losses(waiting_at_zero)
    ]
    calibration = calibrate(samples, baseline, f"bench-prefetch-{args.prefetch}")
    fitted = calibration.fitted
    print(
        f"\nrequests/step {args.requests}, concurrency {args.concurrency}, prefetch "
        f"{args.prefetch}, record {args.record_bytes} B, compute {compute_seconds * 1000:.1f} ms "
        f"per step; baseline {baseline:.2f} steps/s, {waiting_at_zero:.1%} of it waiting "
        "(RTT 0, first and last)"
    )
    if fitted is not None:
        model = fitted.model
        print(
            f"fitted {model.kind.value}: k={model.k:.5f}/ms, hidden {model.hidden_rtt_ms:.1f} ms, "
            f"rms {fitted.rms_error:.2%}, trusted {calibration.trusted}"
        )
    print("| RTT ms | steps/s | measured loss | data-stall model | fitted | reference curve |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    worst_fit = worst_model = 0.0
    fit_gaps = []
    for m in results:
        measured = statistics.fmean(m.losses(waiting_at_zero))
        predicted = data_stall_loss(profile, m.rtt_ms, None)
        fit = fitted.loss(m.rtt_ms) if fitted else math.nan
        if m.rtt_ms <= 20:
            fit_gaps.append(abs(fit - measured))
            worst_fit = max(worst_fit, abs(fit - measured))
            worst_model = max(worst_model, abs(predicted - measured))
        print(
            f"| {m.rtt_ms:g} | {statistics.fmean(m.steps_per_second):.1f} | {measured:.1%} | "
            f"{predicted:.1%} | {fit:.1%} | "
            f"{reference_loss(m.rtt_ms):.1%} |"
        )
    print(
        f"largest gap for RTT ≤ 20 ms: fitted {worst_fit * 100:.1f} points (mean "
        f"{statistics.fmean(fit_gaps) * 100:.1f}), data-stall model {worst_model * 100:.1f} "
        "points (goal: fitted within 2)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8, help="records per step (8)")
    parser.add_argument("--concurrency", type=int, default=4, help="fetch threads (4)")
    parser.add_argument(
        "--prefetch", type=int, nargs="+", default=[0, 1, 2], help="depths to run (0 1 2)"
    )
    parser.add_argument("--record-bytes", type=int, default=4096, help="record size (4 KiB)")
    parser.add_argument("--compute-ms", type=float, default=25.0, help="compute per step (25)")
    parser.add_argument("--steps", type=int, default=48, help="steps per RTT and pass (48)")
    args = parser.parse_args()
    started = time.monotonic()
    compute = make_compute(args.compute_ms)
    for depth in args.prefetch:
        run = argparse.Namespace(**{**vars(args), "prefetch": depth})
        results, waiting_at_zero = measure(run, compute)
        report(run, results, waiting_at_zero)
    print(f"\nmeasured in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
