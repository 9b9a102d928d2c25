"""Operator settings, in sections by meaning (latency, scheduling, reporting, serving, leader
election, health, learning), read from
command-line flags, each also readable from `TSUNAGU_<FLAG>` in the environment (how the Helm
chart passes them)."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsunagu.api.scheduling import TaintEffect, Toleration, TolerationOperator
from tsunagu.placement.engine import EngineSettings
from tsunagu.sources.latency import LatencySettings
from tsunagu.sources.throughput_prometheus import DEFAULT_QUERY, ThroughputQuerySettings


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
    # Bind mode: each pod is created with its node already set (one write per pod) instead of
    # created, then bound (two). See docs/operator.md, "Creating pods bound".
    create_pods_bound: bool = True
    # A gang on a node NotReady for longer than this is placed again (a node gone: at once).
    node_lost_grace_seconds: float = 300.0
    # Every member cluster is asked this often whether it answers (within as long, 5 s at most).
    member_check_seconds: float = 10.0
    # Added to every gang pod (and honoured when placing): the toleration of the taint that
    # keeps other schedulers' pods off the GPU nodes.
    gang_tolerations: tuple[Toleration, ...] = ()
    # The namespace of the cluster-wide default ThroughputProfiles, used for a class in every
    # namespace without a trusted profile of its own ("": none). `from_args` defaults it to the
    # namespace of the Lease, the operator's own.
    default_profiles_namespace: str = ""

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
class LeaderElectionSettings:
    """kube-scheduler's semantics and defaults: a leader that has not renewed its Lease within
    `renew_deadline` stops acting; a standby takes the Lease once it has seen no renewal for
    `lease_duration`; every candidate tries every `retry_period`."""

    enabled: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # The chart's Lease for its usual install (release "tsunagu" in tsunagu-system).
    lease_name: str = "tsunagu"
    namespace: str = "tsunagu-system"
    # Pod name and uid in a pod (the chart's downward API env), host and pid outside.
    identity: str = ""


@dataclass(frozen=True, slots=True)
class LearningSettings:
    """Learning each workload class's sensitivity from its jobs' throughput (docs/throughput.md):
    the leader reads it from the Prometheus of the latency section every `interval_seconds`."""

    # 0: off (also off without a Prometheus URL).
    interval_seconds: float = 60.0
    query: ThroughputQuerySettings = field(default_factory=ThroughputQuerySettings)
    # A job is sampled once it has run this long: the query's rate() window must hold only its
    # present pods (not its start, nor its pods in another region before a requeue).
    warmup_seconds: float = 120.0
    # A class without a ThroughputProfile in the job's namespace gets one named after it; off:
    # only profiles that exist are updated.
    create_profiles: bool = True


@dataclass(frozen=True, slots=True)
class HealthSettings:
    # /healthz fails once no request reached the API server for this long.
    api_unreachable_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    # TrainingJobs and Datasets of these namespaces only; empty: all.
    namespaces: tuple[str, ...] = ()
    latency: LatencySettings = field(default_factory=LatencySettings)
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)
    reporting: ReportingSettings = field(default_factory=ReportingSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)


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
    # Not `flag`: an empty value is meaningful (no defaults), not "unset".
    parser.add_argument(
        "--default-profiles-namespace", default=_env("default-profiles-namespace"),
        help="namespace whose ThroughputProfiles apply to every namespace without a trusted "
        "one of the class; default: the Lease's namespace; empty: none "
        "(env TSUNAGU_DEFAULT_PROFILES_NAMESPACE)",
    )  # fmt: skip
    flag("metrics-port", int, 8080, "port of the Prometheus metrics endpoint (0: off)")
    flag("liveness-port", int, 8081, "port of the /healthz liveness endpoint (0: off)")
    flag("log-format", str, "plain", "plain or json")
    flag("retry-interval", float, 15.0, "seconds between retries of pending jobs")
    flag("bind-concurrency", int, 8, "gangs created and bound at the same time")
    parser.add_argument(
        "--create-pods-bound", type=_boolean,
        default=_boolean(_env("create-pods-bound") or "true"),
        help="Bind mode: create each pod with its node set, one write instead of create + bind "
        "(env TSUNAGU_CREATE_PODS_BOUND)",
    )  # fmt: skip
    flag(
        "node-lost-grace-seconds", float, 300.0,
        "a gang on a node NotReady for longer than this is placed again",
    )  # fmt: skip
    flag(
        "member-check-interval", float, 10.0,
        "seconds between two checks that each member cluster answers (each within as long, "
        "5 s at most)",
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
    add_leader_election_arguments(parser, flag)
    add_learning_arguments(parser, flag)


def add_learning_arguments(parser: argparse.ArgumentParser, flag: Flag) -> None:
    defaults = LearningSettings()
    flag(
        "throughput-interval", float, defaults.interval_seconds,
        "seconds between reads of the jobs' throughput from Prometheus (0: learn nothing)",
    )  # fmt: skip
    flag(
        "throughput-query", str, None,
        f"PromQL returning each running job's throughput (default: {DEFAULT_QUERY})",
    )  # fmt: skip
    flag("throughput-namespace-label", str, "namespace", "label of the job's namespace")
    flag("throughput-job-label", str, "job", "label of the TrainingJob's name")
    flag(
        "throughput-warmup-seconds", float, defaults.warmup_seconds,
        "a job's throughput is sampled once it has run this long (the query's window)",
    )  # fmt: skip
    parser.add_argument(
        "--throughput-create-profiles", type=_boolean,
        default=_boolean(_env("throughput-create-profiles") or "true"),
        help="create a ThroughputProfile named after a class that has none in the job's "
        "namespace (true or false; env TSUNAGU_THROUGHPUT_CREATE_PROFILES)",
    )  # fmt: skip


def learning_from_args(args: argparse.Namespace) -> LearningSettings:
    for name in ("throughput_interval", "throughput_warmup_seconds"):
        if getattr(args, name) < 0:
            flag = name.replace("_", "-")
            raise SystemExit(f"tsunagu run: --{flag} must be 0 or more (got {getattr(args, name)})")
    return LearningSettings(
        interval_seconds=args.throughput_interval,
        query=ThroughputQuerySettings(
            query=args.throughput_query or DEFAULT_QUERY,
            namespace_label=args.throughput_namespace_label,
            job_label=args.throughput_job_label,
        ),
        warmup_seconds=args.throughput_warmup_seconds,
        create_profiles=args.throughput_create_profiles,
    )


def add_leader_election_arguments(parser: argparse.ArgumentParser, flag: Flag) -> None:
    defaults = LeaderElectionSettings()
    parser.add_argument(
        "--leader-elect", type=_boolean, default=_boolean(_env("leader-elect") or "true"),
        help="act only while holding the Lease (true or false; env TSUNAGU_LEADER_ELECT)",
    )  # fmt: skip
    flag(
        "leader-elect-lease-duration", float, defaults.lease_duration,
        "seconds a standby waits after the last renewal it saw before it takes the Lease",
    )  # fmt: skip
    flag(
        "leader-elect-renew-deadline", float, defaults.renew_deadline,
        "seconds the leader keeps acting without a successful renewal",
    )  # fmt: skip
    flag("leader-elect-retry-period", float, defaults.retry_period, "seconds between tries")
    flag("leader-elect-lease-name", str, defaults.lease_name, "name of the Lease")
    flag(
        "leader-elect-namespace", str, None,
        "namespace of the Lease; default: the pod's own, else tsunagu-system",
    )  # fmt: skip
    flag(
        "api-unreachable-seconds", float, HealthSettings().api_unreachable_seconds,
        "/healthz fails once the API server has not answered for this long",
    )  # fmt: skip


Flag = Callable[[str, type, object, str], None]


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str | None:
    """The pod's namespace: the downward API env, else the service-account mount."""
    namespace = os.environ.get("POD_NAMESPACE")
    if namespace:
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def identity() -> str:
    """Who holds the Lease: pod name and uid in a pod (unique across restarts and nodes), host
    and pid outside one."""
    pod, uid = os.environ.get("POD_NAME"), os.environ.get("POD_UID")
    if pod:
        return f"{pod}_{uid}" if uid else pod
    return f"{socket.gethostname()}_{os.getpid()}"


def leader_election_from_args(args: argparse.Namespace) -> LeaderElectionSettings:
    settings = LeaderElectionSettings(
        enabled=args.leader_elect,
        lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period,
        lease_name=args.leader_elect_lease_name,
        namespace=args.leader_elect_namespace or own_namespace() or "tsunagu-system",
        identity=identity(),
    )
    # The rules of client-go's leader election: a leader gives up before anyone may take over,
    # and tries more than once before it gives up.
    if not settings.retry_period > 0:
        raise SystemExit("tsunagu run: --leader-elect-retry-period must be more than 0")
    if not settings.renew_deadline > settings.retry_period:
        raise SystemExit(
            "tsunagu run: --leader-elect-renew-deadline must be more than "
            "--leader-elect-retry-period"
        )
    if not settings.lease_duration > settings.renew_deadline:
        raise SystemExit(
            "tsunagu run: --leader-elect-lease-duration must be more than "
            "--leader-elect-renew-deadline"
        )
    if not settings.lease_name:
        raise SystemExit("tsunagu run: --leader-elect-lease-name must not be empty")
    return settings


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
    if args.member_check_interval <= 0:
        raise SystemExit(
            "tsunagu run: --member-check-interval must be more than 0 "
            f"(got {args.member_check_interval})"
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
    leader_election = leader_election_from_args(args)
    default_profiles = args.default_profiles_namespace
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
            create_pods_bound=args.create_pods_bound,
            node_lost_grace_seconds=args.node_lost_grace_seconds,
            member_check_seconds=args.member_check_interval,
            gang_tolerations=tolerations,
            default_profiles_namespace=(
                leader_election.namespace if default_profiles is None else default_profiles
            ),
        ),
        reporting=ReportingSettings(hold_seconds=args.report_hold_seconds),
        serving=ServingSettings(
            metrics_port=args.metrics_port,
            liveness_port=args.liveness_port,
            log_format=args.log_format,
            verbose=args.verbose,
        ),
        leader_election=leader_election,
        health=HealthSettings(api_unreachable_seconds=args.api_unreachable_seconds),
        learning=learning_from_args(args),
    )
