"""Operator settings, in sections by meaning (latency, scheduling, reporting, serving), read from
command-line flags, each also readable from `TSUNAGU_<FLAG>` in the environment (how the Helm
chart passes them)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from tsunagu.api.scheduling import TaintEffect, Toleration, TolerationOperator
from tsunagu.placement.engine import EngineSettings
from tsunagu.sources.latency import LatencySettings


def gang_toleration(text: str) -> Toleration:
    """A toleration from `KEY[=VALUE]:EFFECT` (the form `kubectl taint` takes): Equal with a
    value, Exists without; raises ValueError naming what is wrong."""
    key_value, _, effect = text.rpartition(":")
    key, has_value, value = key_value.partition("=")
    if not key or effect not in tuple(TaintEffect):
        raise ValueError(
            f"--gang-toleration: {text!r} is not KEY[=VALUE]:EFFECT with EFFECT one of "
            f"{', '.join(TaintEffect)}"
        )
    operator = TolerationOperator.Equal if has_value else TolerationOperator.Exists
    return Toleration(key, operator, value, TaintEffect(effect))


def toleration_body(toleration: Toleration) -> dict[str, str]:
    """The toleration as a pod spec carries it."""
    body = {"key": toleration.key, "operator": str(toleration.operator)}
    if toleration.value:
        body["value"] = toleration.value
    if toleration.effect is not None:
        body["effect"] = str(toleration.effect)
    return body


@dataclass(frozen=True, slots=True)
class SchedulingSettings:
    # Budgets for jobs that set none (None: no budget).
    default_max_rtt_ms: float | None = None
    default_max_throughput_loss: float | None = None
    # Pending jobs are decided again at least this often.
    retry_interval: float = 15.0
    # Gangs created and bound at the same time.
    bind_concurrency: int = 8
    # A gang on a node NotReady for longer than this is placed again (a node gone: at once).
    node_lost_grace_seconds: float = 300.0
    # Added to every gang pod (and honoured when placing): the toleration of the taint that
    # keeps other schedulers' pods off the GPU nodes.
    gang_tolerations: tuple[Toleration, ...] = ()

    def engine(self) -> EngineSettings:
        return EngineSettings(
            default_max_rtt_ms=self.default_max_rtt_ms,
            default_max_throughput_loss=self.default_max_throughput_loss,
        )


@dataclass(frozen=True, slots=True)
class ReportingSettings:
    # Statuses and Events wait at most this long while gangs are being bound (see `report`).
    hold_seconds: float = 30.0
    region_status_interval: float = 5.0
    # A measured link is written to Region.status again only when it moves more than this.
    link_change_threshold_ms: float = 1.0


@dataclass(frozen=True, slots=True)
class ServingSettings:
    metrics_port: int = 8080
    liveness_port: int = 8081
    log_format: str = "plain"
    verbose: bool = False


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    # TrainingJobs and Datasets of these namespaces only; empty: all.
    namespaces: tuple[str, ...] = ()
    latency: LatencySettings = field(default_factory=LatencySettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    reporting: ReportingSettings = field(default_factory=ReportingSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"TSUNAGU_{name.upper().replace('-', '_')}", default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def flag(name: str, kind: type, default: object, help_text: str) -> None:
        raw = _env(name)
        parser.add_argument(
            f"--{name}", type=kind, default=kind(raw) if raw not in (None, "") else default,
            help=f"{help_text} (env TSUNAGU_{name.upper().replace('-', '_')})",
        )  # fmt: skip

    env_namespaces = [n for n in (_env("namespace") or "").split(",") if n]
    parser.add_argument(
        "--namespace", action="append", default=None,
        help="watch only this namespace, repeatable; default: all (env TSUNAGU_NAMESPACE, a,b)",
    )  # fmt: skip
    parser.set_defaults(env_namespaces=env_namespaces)
    env_tolerations = [t for t in (_env("gang-tolerations") or "").split(",") if t]
    parser.add_argument(
        "--gang-toleration", action="append", default=None, metavar="KEY[=VALUE]:EFFECT",
        help="add this toleration to every gang pod, repeatable "
        "(env TSUNAGU_GANG_TOLERATIONS, comma-separated)",
    )  # fmt: skip
    parser.set_defaults(env_gang_tolerations=env_tolerations)
    flag("prometheus-url", str, None, "Prometheus base URL; without it only declared links count")
    flag(
        "latency-query", str, None, "PromQL returning RTT in seconds per source/target region pair"
    )
    flag("jitter-query", str, None, "PromQL returning jitter in seconds per pair")
    flag("latency-interval", float, 10.0, "seconds between latency queries")
    flag("staleness-seconds", float, 120.0, "a measurement older than this counts as unknown")
    flag("default-max-rtt-ms", float, None, "RTT budget for jobs that set none")
    flag(
        "default-max-throughput-loss", float, None, "throughput-loss budget for jobs that set none"
    )
    flag("metrics-port", int, 8080, "port of the Prometheus metrics endpoint (0: off)")
    flag("liveness-port", int, 8081, "port of the /healthz liveness endpoint (0: off)")
    flag("log-format", str, "plain", "plain or json")
    flag("retry-interval", float, 15.0, "seconds between retries of pending jobs")
    flag("bind-concurrency", int, 8, "gangs created and bound at the same time")
    flag(
        "node-lost-grace-seconds", float, 300.0,
        "a gang on a node NotReady for longer than this is placed again",
    )  # fmt: skip
    flag(
        "report-hold-seconds", float, 30.0,
        "longest a status write or Event waits while gangs are being bound (0: none)",
    )  # fmt: skip
    for name, help_text in (
        ("verbose", "log every step"),
        ("declared-fallback", "a pair whose measurement went stale takes its declared link"),
    ):
        parser.add_argument(
            f"--{name}", action="store_true", default=_env(name, "") in ("1", "true", "True"),
            help=f"{help_text} (env TSUNAGU_{name.upper().replace('-', '_')})",
        )  # fmt: skip


def from_args(args: argparse.Namespace) -> OperatorSettings:
    if args.log_format not in ("plain", "json"):
        raise SystemExit(
            f"tsunagu run: --log-format must be plain or json (got {args.log_format!r})"
        )
    if args.node_lost_grace_seconds < 0:
        raise SystemExit(
            "tsunagu run: --node-lost-grace-seconds must be 0 or more "
            f"(got {args.node_lost_grace_seconds})"
        )
    if args.report_hold_seconds < 0:
        raise SystemExit(
            f"tsunagu run: --report-hold-seconds must be 0 or more (got {args.report_hold_seconds})"
        )
    try:
        tolerations = tuple(
            gang_toleration(text) for text in args.gang_toleration or args.env_gang_tolerations
        )
    except ValueError as error:
        raise SystemExit(f"tsunagu run: {error}") from None
    return OperatorSettings(
        namespaces=tuple(args.namespace or args.env_namespaces),
        latency=LatencySettings(
            prometheus_url=args.prometheus_url or None,
            rtt_query=args.latency_query or None,
            jitter_query=args.jitter_query or None,
            interval_seconds=args.latency_interval,
            staleness_seconds=args.staleness_seconds,
            declared_fallback=args.declared_fallback,
        ),
        scheduling=SchedulingSettings(
            default_max_rtt_ms=args.default_max_rtt_ms,
            default_max_throughput_loss=args.default_max_throughput_loss,
            retry_interval=args.retry_interval,
            bind_concurrency=args.bind_concurrency,
            node_lost_grace_seconds=args.node_lost_grace_seconds,
            gang_tolerations=tolerations,
        ),
        reporting=ReportingSettings(hold_seconds=args.report_hold_seconds),
        serving=ServingSettings(
            metrics_port=args.metrics_port,
            liveness_port=args.liveness_port,
            log_format=args.log_format,
            verbose=args.verbose,
        ),
    )
