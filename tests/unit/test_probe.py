"""The latency probe: addresses and peers, echo + measurement through a delay proxy, failures."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.delay_proxy import DelayProxy
from tests.support.waiting import wait_until
from tsunagu.commands import probe as probe_command
from tsunagu.probe.app import Probe, ProbeConfig, running_probe
from tsunagu.probe.metrics import RTT_BUCKETS_SECONDS
from tsunagu.probe.peers import (
    Endpoint,
    PeersError,
    merge_peers,
    parse_peer_flag,
    parse_peers_document,
)
from tsunagu.probe.prober import ProberSettings

LOOPBACK_ANY_PORT = Endpoint("127.0.0.1", 0)
FAST = ProberSettings(interval_seconds=0.05, timeout_seconds=0.5)

# -- addresses and peers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.1:7946", Endpoint("10.0.0.1", 7946), id="ipv4"),
        pytest.param("probe.osaka.svc:7946", Endpoint("probe.osaka.svc", 7946), id="dns-name"),
        pytest.param("[::1]:7946", Endpoint("::1", 7946), id="ipv6-bracketed"),
        pytest.param(" 10.0.0.1:1 ", Endpoint("10.0.0.1", 1), id="surrounding-space"),
    ],
)
def test_endpoint_parses(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text, "--peer osaka") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("10.0.0.1", "--peer osaka: expected HOST:PORT", id="no-port"),
        pytest.param(":7946", "--peer osaka: expected HOST:PORT", id="no-host"),
        pytest.param("10.0.0.1:http", "--peer osaka: port must be", id="port-name"),
        pytest.param("10.0.0.1:70000", "--peer osaka: port must be", id="port-too-big"),
        pytest.param("10.0.0.1:0", "--peer osaka: port must be an integer 1-", id="port-zero"),
        pytest.param("::1:7946", "--peer osaka: write an IPv6 address in brackets", id="ipv6-bare"),
    ],
)
def test_endpoint_rejects_with_the_flag_named(text: str, message: str) -> None:
    with pytest.raises(PeersError, match=message):
        Endpoint.parse(text, "--peer osaka")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("osaka", "--peer: expected REGION=HOST:PORT", id="no-equals"),
        pytest.param("Osaka=10.0.0.1:1", "--peer: region must be a lower-case", id="upper-case"),
        pytest.param("=10.0.0.1:1", "--peer: region must be", id="empty-region"),
        pytest.param("osaka=10.0.0.1", "--peer osaka: expected HOST:PORT", id="no-port"),
    ],
)
def test_peer_flag_errors_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(PeersError, match=message):
        parse_peer_flag(text)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param("osaka: [1, 2", "peers.yaml: not valid YAML", id="broken-yaml"),
        pytest.param("- osaka", "peers.yaml: expected a map", id="a-list"),
        pytest.param("osaka: 7946", "peers.yaml: osaka: expected a string", id="port-only"),
        pytest.param("osaka: 'x'", "peers.yaml: osaka: expected HOST:PORT", id="no-port"),
        pytest.param("OSAKA: 'x:1'", "peers.yaml: region must be", id="bad-region"),
    ],
)
def test_peers_document_errors_name_file_and_region(document: str, message: str) -> None:
    with pytest.raises(PeersError, match=message):
        parse_peers_document(document, "peers.yaml")


def test_peers_merge_skips_own_region_and_flags_win() -> None:
    from_file = {"tokyo": Endpoint("t", 1), "osaka": Endpoint("o", 1), "nara": Endpoint("n", 1)}
    merged = merge_peers("tokyo", {"osaka": Endpoint("o2", 2)}, from_file)
    assert merged == {"nara": Endpoint("n", 1), "osaka": Endpoint("o2", 2)}


def test_rtt_buckets_are_fine_from_half_a_millisecond_to_a_second() -> None:
    assert RTT_BUCKETS_SECONDS[0] == 0.0005
    assert RTT_BUCKETS_SECONDS[-1] == 1.0
    ratios = [b / a for a, b in itertools.pairwise(RTT_BUCKETS_SECONDS)]
    assert all(1.0 < ratio <= 1.2 for ratio in ratios), ratios


# -- echo and measurement between in-process probes ------------------------------------------


def sample(probe: Probe, name: str, target: str, **labels: str) -> float | None:
    return probe.metrics.registry.get_sample_value(
        name, {"source_region": probe.config.region, "target_region": target, **labels}
    )


async def eventually(predicate: Callable[[], object], message: str, within: float = 15.0) -> None:
    """Polls `predicate` from inside a running loop (which must keep running) with a deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}")
        await asyncio.sleep(0.02)


def config(
    region: str,
    static_peers: Mapping[str, Endpoint] | None = None,
    peers_file: Path | None = None,
    prober: ProberSettings = FAST,
    peers_check_seconds: float = 2.0,
) -> ProbeConfig:
    return ProbeConfig(
        region=region,
        listen=LOOPBACK_ANY_PORT,
        metrics_listen=LOOPBACK_ANY_PORT,
        static_peers=static_peers or {},
        peers_file=peers_file,
        prober=prober,
        peers_check_seconds=peers_check_seconds,
    )


@asynccontextmanager
async def two_probes_through_a_proxy(
    one_way_delay: float,
) -> AsyncIterator[tuple[Probe, DelayProxy]]:
    """osaka listens; tokyo measures osaka through a delay proxy."""
    async with running_probe(config("osaka")) as osaka:
        assert osaka.echo_address is not None
        with DelayProxy("127.0.0.1", osaka.echo_address.port, one_way_delay) as proxy:
            peers = {"osaka": Endpoint("127.0.0.1", proxy.port)}
            async with running_probe(config("tokyo", static_peers=peers)) as tokyo:
                yield tokyo, proxy


def test_measured_rtt_covers_the_injected_delay_and_follows_a_change() -> None:
    async def scenario() -> tuple[float, float]:
        async with two_probes_through_a_proxy(one_way_delay=0.010) as (tokyo, proxy):
            await eventually(
                lambda: (sample(tokyo, "tsunagu_probe_rtt_seconds_count", "osaka") or 0) >= 5,
                "five round trips tokyo -> osaka",
            )
            first = sample(tokyo, "tsunagu_probe_last_rtt_seconds", "osaka")
            proxy.set_rtt_ms(60)
            await eventually(
                lambda: (sample(tokyo, "tsunagu_probe_last_rtt_seconds", "osaka") or 0) >= 0.060,
                "the RTT to follow the proxy to 60 ms",
            )
            second = sample(tokyo, "tsunagu_probe_last_rtt_seconds", "osaka")
            assert sample(tokyo, "tsunagu_probe_rtt_seconds_count", "tokyo") is None
            assert first is not None
            assert second is not None
            return first, second

    first, second = asyncio.run(scenario())
    assert first >= 0.020  # 10 ms each way
    assert second >= 0.060


@pytest.mark.parametrize(
    ("peer", "reason"),
    [
        pytest.param("closed-port", "refused", id="nothing-listens"),
        pytest.param("slow-proxy", "timeout", id="echo-slower-than-timeout"),
        pytest.param("wrong-echo", "mismatch", id="peer-answers-garbage"),
    ],
)
def test_failed_round_trips_are_counted_by_reason(peer: str, reason: str) -> None:
    async def reply_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(64):
            writer.write(bytes(len(data)))  # same length, wrong content
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        garbage = await asyncio.start_server(reply_garbage, "127.0.0.1", 0)
        garbage_port = garbage.sockets[0].getsockname()[1]
        async with running_probe(config("osaka")) as osaka:
            assert osaka.echo_address is not None
            with DelayProxy("127.0.0.1", osaka.echo_address.port, 0.5) as slow:
                port = {
                    "closed-port": free_port(),
                    "slow-proxy": slow.port,
                    "wrong-echo": garbage_port,
                }[peer]
                settings = ProberSettings(interval_seconds=0.05, timeout_seconds=0.2)
                peers = {"nara": Endpoint("127.0.0.1", port)}
                async with running_probe(
                    config("tokyo", static_peers=peers, prober=settings)
                ) as tokyo:
                    await eventually(
                        lambda: (
                            (
                                sample(tokyo, "tsunagu_probe_failures_total", "nara", reason=reason)
                                or 0
                            )
                            >= 2
                        ),
                        f"two failures with reason {reason}",
                    )
                    assert sample(tokyo, "tsunagu_probe_rtt_seconds_count", "nara") is None
        garbage.close()
        await garbage.wait_closed()

    asyncio.run(scenario())


def test_peers_file_is_re_read_on_change(tmp_path: Path) -> None:
    peers_file = tmp_path / "peers.yaml"

    async def scenario() -> None:
        async with running_probe(config("osaka")) as osaka, running_probe(config("fukuoka")) as fk:
            assert osaka.echo_address is not None
            assert fk.echo_address is not None
            # The same ConfigMap goes to every region, so it lists tokyo itself too.
            peers_file.write_text(f"tokyo: 127.0.0.1:1\nosaka: '{osaka.echo_address}'\n")
            tokyo_config = config("tokyo", peers_file=peers_file, peers_check_seconds=0.05)
            async with running_probe(tokyo_config) as tokyo:
                assert set(tokyo.peers) == {"osaka"}
                await eventually(
                    lambda: sample(tokyo, "tsunagu_probe_rtt_seconds_count", "osaka"),
                    "a measurement to osaka",
                )
                # A ConfigMap update replaces the file; the watcher picks it up by itself.
                replacement = tmp_path / "peers.new"
                replacement.write_text(f"fukuoka: '{fk.echo_address}'\n")
                os.replace(replacement, peers_file)
                await eventually(lambda: set(tokyo.peers) == {"fukuoka"}, "peers = {fukuoka}")
                await eventually(
                    lambda: sample(tokyo, "tsunagu_probe_rtt_seconds_count", "fukuoka"),
                    "a measurement to fukuoka",
                )
                # The removed peer's series are gone rather than frozen at their last value.
                assert sample(tokyo, "tsunagu_probe_rtt_seconds_count", "osaka") is None
                # A broken update keeps the previous peers measuring.
                peers_file.write_text("fukuoka: [oops\n")
                assert tokyo.check_peers_file() is False
                assert set(tokyo.peers) == {"fukuoka"}

    asyncio.run(scenario())


def test_metrics_endpoint_serves_the_histogram() -> None:
    async def scenario() -> bytes:
        async with two_probes_through_a_proxy(one_way_delay=0.0) as (tokyo, _):
            await eventually(
                lambda: sample(tokyo, "tsunagu_probe_rtt_seconds_count", "osaka"), "a measurement"
            )
            assert tokyo.metrics_address is not None
            url = f"http://{tokyo.metrics_address}/metrics"
            response = await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)
            with response:
                return bytes(response.read())

    body = asyncio.run(scenario()).decode()
    assert 'tsunagu_probe_rtt_seconds_bucket{le="0.0005",' in body
    assert 'source_region="tokyo",target_region="osaka"' in body


# -- the delay proxy itself ------------------------------------------------------------------


def test_delay_proxy_keeps_order_when_the_delay_drops() -> None:
    async def scenario() -> bytes:
        async with running_probe(config("osaka")) as osaka:
            assert osaka.echo_address is not None
            with DelayProxy("127.0.0.1", osaka.echo_address.port, 0.2) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(b"first-")
                await writer.drain()
                proxy.set_delay(0.0)
                writer.write(b"second")
                await writer.drain()
                async with asyncio.timeout(10):
                    echoed = await reader.readexactly(12)
                writer.close()
                return echoed

    assert asyncio.run(scenario()) == b"first-second"


def test_delay_proxy_rejects_negative_delay() -> None:
    with DelayProxy("127.0.0.1", 9) as proxy, pytest.raises(ValueError, match="delay must be"):
        proxy.set_delay(-0.001)


# -- the command -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    probe_command.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--region", "Tokyo"], "--region: region must be", id="bad-region"),
        pytest.param(["--region", "tokyo", "--listen", "7946"], "--listen: expected", id="listen"),
        pytest.param(
            ["--region", "tokyo", "--metrics-listen", "x:y"], "--metrics-listen: port", id="m"
        ),
        pytest.param(["--region", "tokyo", "--peer", "osaka"], "--peer: expected", id="peer"),
        pytest.param(
            ["--region", "tokyo", "--peer", "osaka=a:1", "--peer", "osaka=b:1"],
            "--peer: region 'osaka' given twice",
            id="peer-twice",
        ),
        pytest.param(["--region", "tokyo", "--interval", "0"], "--interval: must be", id="zero"),
        pytest.param(["--region", "tokyo", "--timeout", "-1"], "--timeout: must be", id="neg"),
        pytest.param(
            ["--region", "tokyo", "--peers-file", "/nonexistent/peers.yaml"],
            "--peers-file /nonexistent/peers.yaml: cannot read",
            id="missing-peers-file",
        ),
    ],
)
def test_command_rejects_bad_flags_with_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert probe_command.execute(parse(*argv, "--log-level", "ERROR")) == 2
    err = capsys.readouterr().err
    assert err.startswith("tsunagu probe: ")
    assert message in err
    assert "Traceback" not in err


def test_command_names_the_busy_address(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = parse("--region", "tokyo", "--listen", f"127.0.0.1:{port}", "--log-level", "ERROR")
        assert probe_command.execute(args) == 1
    assert f"--listen 127.0.0.1:{port}: cannot listen" in capsys.readouterr().err


@pytest.fixture
def probe_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*argv: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tsunagu.cli", "probe", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_probe_process_stops_cleanly_on_sigterm(
    probe_process: Callable[..., subprocess.Popen[str]],
) -> None:
    metrics_port = free_port()
    process = probe_process(
        "--region", "tokyo", "--listen", "127.0.0.1:0", "--metrics-listen",
        f"127.0.0.1:{metrics_port}", "--peer", f"osaka=127.0.0.1:{free_port()}",
    )  # fmt: skip
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_until(
        lambda: b"tsunagu_probe_peers 1.0" in urllib.request.urlopen(url, timeout=2).read(),
        timeout=30,
        message="the probe's metrics endpoint",
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 10
    assert "probe tokyo stopped" in output
    assert "Traceback" not in output
