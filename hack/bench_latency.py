#!/usr/bin/env python3
"""Reaction time of measured latency: an RTT change on the wire → the source's measurement.

Two `tsunagu probe` processes (tokyo, fukuoka) measure each other through delay proxies; a real
Prometheus scrapes them; the Prometheus latency source polls with its default queries. The RTT
alternates between --low and --high; for each change the reaction time is the time from the proxy
change to the first poller update whose tokyo→fukuoka RTT stands for the new value.

    .venv/bin/python hack/bench_latency.py [--changes 12] [--write-docs]

Rises show within about one scrape plus one poll; drops take about the query window, because a
p95 keeps the old, higher value until the old observations have left the window.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402
from tests.support.latency_harness import (  # noqa: E402
    BackgroundPoller,
    LatencyMesh,
    PrometheusServer,
    close_to,
    rtt_of,
)
from tests.support.waiting import wait_until  # noqa: E402

from tsunagu.sources.prometheus_latency import (  # noqa: E402
    DEFAULT_WINDOW,
    LatencySourceMetrics,
    PrometheusLatencySettings,
    PrometheusLatencySource,
    probe_jitter_query,
    probe_quantile_query,
)

DOCS = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "## Latency measurement"


@dataclass(frozen=True)
class Reaction:
    from_ms: float
    to_ms: float
    seconds: float

    @property
    def rise(self) -> bool:
        return self.to_ms > self.from_ms


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with few samples p99 is the worst one, as it should be."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def measure(args: argparse.Namespace, workdir: Path) -> list[Reaction]:
    rtts = (args.low, args.high)
    reactions: list[Reaction] = []
    rtt = {("tokyo", "fukuoka"): args.low}
    with (
        LatencyMesh(("tokyo", "fukuoka"), workdir / "mesh", rtt, probe_interval=args.probe_interval)
        as mesh,
        PrometheusServer(
            workdir / "prometheus", mesh.metrics_targets, scrape_interval=args.scrape_interval
        ) as prometheus,
    ):  # fmt: skip
        settings = PrometheusLatencySettings(
            url=prometheus.url,
            rtt_query=probe_quantile_query(0.95, args.window),
            jitter_query=probe_jitter_query(args.window),
            interval_seconds=args.poll_interval,
        )
        source = PrometheusLatencySource(
            settings, metrics=LatencySourceMetrics(CollectorRegistry())
        )
        with BackgroundPoller(source, known_regions={"tokyo", "fukuoka"}) as poller:

            def reflects(target_ms: float, after: float) -> float | None:
                for update in poller.updates:
                    measured = rtt_of(update.measurements, "tokyo", "fukuoka")
                    if update.received_at >= after and measured and close_to(measured, target_ms):
                        return update.received_at
                return None

            wait_until(lambda: reflects(args.low, 0.0), timeout=120, message="a first reading")
            current = args.low
            for index in range(args.changes):
                # A random pause puts the change at a random phase of scrape and poll cycles.
                time.sleep(random.uniform(0, max(args.scrape_interval, args.poll_interval)))
                target = rtts[(index + 1) % 2]
                changed_at = time.time()
                mesh.set_rtt_ms("tokyo", "fukuoka", target)
                seen_at = wait_until(
                    lambda target=target, changed_at=changed_at: reflects(target, changed_at),
                    timeout=180,
                    interval=0.05,
                    message=f"the source to show {target} ms",
                )
                reaction = Reaction(current, target, seen_at - changed_at)
                reactions.append(reaction)
                seen = [
                    f"{rtt_of(u.measurements, 'tokyo', 'fukuoka') or float('nan'):.1f}"
                    for u in poller.updates
                    if changed_at <= u.received_at <= seen_at
                ]
                print(
                    f"change {index + 1:2d}: {current:g} → {target:g} ms seen after "
                    f"{reaction.seconds:5.1f} s (readings: {' '.join(seen)})",
                    flush=True,
                )
                current = target
        source.close()
    return reactions


def summary(args: argparse.Namespace, reactions: list[Reaction]) -> str:
    def row(name: str, values: list[float]) -> str:
        if not values:
            return f"| {name} | 0 | – | – | – |"
        return (
            f"| {name} | {len(values)} | {percentile(values, 50):.1f} | "
            f"{percentile(values, 99):.1f} | {max(values):.1f} |"
        )

    every = [r.seconds for r in reactions]
    rises = [r.seconds for r in reactions if r.rise]
    drops = [r.seconds for r in reactions if not r.rise]
    return "\n".join(
        [
            SECTION,
            "",
            "Reaction time from an RTT change at the delay proxy to the first update of the",
            "Prometheus latency source (its poller) that shows the new RTT for tokyo→fukuoka",
            f'(alternating {args.low:g} ms ↔ {args.high:g} ms; "shows" = not below the',
            "injected value and at most one histogram bucket plus 5 ms above it). Two",
            "`tsunagu probe` processes, a real Prometheus and the default queries (p95 of the",
            "probe histogram; jitter p95 − p50) with the window below.",
            "",
            f"Scrape interval {args.scrape_interval:g} s, query window `[{args.window}]`, "
            f"poll interval {args.poll_interval:g} s, probe interval {args.probe_interval:g} s.",
            "Machine: 2 vCPU, with other builds and test clusters running (scheduling noise).",
            "",
            "| changes | n | p50 (s) | p99 (s) | max (s) |",
            "|---|---|---|---|---|",
            row("all", every),
            row(f"rise {args.low:g}→{args.high:g} ms", rises),
            row(f"drop {args.high:g}→{args.low:g} ms", drops),
            "",
            "A rise shows within about one scrape plus one poll. A drop waits for the old,",
            "higher observations to leave the query window (a p95 holds the worst 5%), so it",
            "takes about the window plus the poll interval; a shorter window reacts faster but",
            "needs at least 4 scrapes in it (see docs/latency.md).",
            "",
            "Command:",
            "",
            "```",
            f".venv/bin/python hack/bench_latency.py --changes {args.changes} "
            f"--scrape-interval {args.scrape_interval:g} --poll-interval {args.poll_interval:g} "
            f"--window {args.window} --write-docs",
            "```",
        ]
    )


def write_section(section: str) -> None:
    """Replaces this benchmark's section of docs/benchmarks.md, leaving other sections alone."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new_lines = [*lines, "", *section.splitlines()]
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new_lines = [*lines[:start], *section.splitlines(), "", *lines[end:]]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(new_lines).rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=12, help="RTT changes (≥ 10)")
    parser.add_argument("--scrape-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--poll-interval", type=float, default=5.0, metavar="SECONDS")
    parser.add_argument("--probe-interval", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--window", default=DEFAULT_WINDOW, help="PromQL range of the queries")
    parser.add_argument("--low", type=float, default=15.0, metavar="MS")
    parser.add_argument("--high", type=float, default=40.0, metavar="MS")
    parser.add_argument("--write-docs", action="store_true", help=f"update {SECTION!r}")
    args = parser.parse_args()
    if args.changes < 1:
        parser.error("--changes: must be ≥ 1")
    with tempfile.TemporaryDirectory(prefix="tsunagu-bench-latency-") as workdir:
        reactions = measure(args, Path(workdir))
    section = summary(args, reactions)
    print()
    print(section)
    if args.write_docs:
        write_section(section)
        print(f"\nwrote the section {SECTION!r} of docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
