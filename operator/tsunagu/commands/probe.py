"""`tsunagu probe`: the inter-region latency probe exporter, one per region."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from tsunagu.probe.app import Probe, ProbeConfig, ProbeStartError
from tsunagu.probe.peers import Endpoint, PeersError, check_region_name, parse_peer_flag
from tsunagu.probe.prober import ProberSettings

log = logging.getLogger("tsunagu.probe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", required=True, help="the region this probe runs in")
    parser.add_argument(
        "--listen",
        default="0.0.0.0:7946",
        metavar="HOST:PORT",
        help="TCP echo address that other regions' probes measure (default %(default)s)",
    )
    parser.add_argument(
        "--metrics-listen",
        default="0.0.0.0:9946",
        metavar="HOST:PORT",
        help="HTTP address of the Prometheus /metrics endpoint (default %(default)s)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="REGION=HOST:PORT",
        help="another region's probe echo address; repeatable; wins over --peers-file",
    )
    parser.add_argument(
        "--peers-file",
        type=Path,
        metavar="FILE",
        help="YAML map region: host:port, re-read when it changes (e.g. a mounted ConfigMap); "
        "the own region is skipped",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        metavar="SECONDS",
        # Two round trips a second keep ~40 observations in the default 20 s query window, so one
        # stray slow round trip does not become the p95.
        help="time between round trips to each peer (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="a round trip (or connect) slower than this counts as failed (default %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def config_from_args(args: argparse.Namespace) -> ProbeConfig:
    """Builds the probe configuration; raises PeersError naming the flag on bad input."""
    region = check_region_name(args.region, "--region")
    for flag, value in (("--interval", args.interval), ("--timeout", args.timeout)):
        if not value > 0 or value > 3600:
            raise PeersError(f"{flag}: must be a number of seconds in (0, 3600], got {value}")
    peers: dict[str, Endpoint] = {}
    for text in args.peer:
        peer_region, endpoint = parse_peer_flag(text)
        if peer_region in peers:
            raise PeersError(f"--peer: region {peer_region!r} given twice")
        peers[peer_region] = endpoint
    return ProbeConfig(
        region=region,
        listen=Endpoint.parse(args.listen, "--listen", allow_port_zero=True),
        metrics_listen=Endpoint.parse(
            args.metrics_listen, "--metrics-listen", allow_port_zero=True
        ),
        static_peers=peers,
        peers_file=args.peers_file,
        prober=ProberSettings(interval_seconds=args.interval, timeout_seconds=args.timeout),
    )


async def _serve(config: ProbeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    probe = Probe(config)
    await probe.run_until(stop)
    log.info("probe %s stopped", config.region)


def execute(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        asyncio.run(_serve(config))
    except PeersError as error:
        print(f"tsunagu probe: {error}", file=sys.stderr)
        return 2
    except ProbeStartError as error:
        print(f"tsunagu probe: {error}", file=sys.stderr)
        return 1
    return 0
