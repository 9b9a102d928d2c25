"""Prometheus metrics of the operator (served by `tsunagu run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLACEMENTS = Counter(
    "tsunagu_placements_total",
    "Placement decisions by region and outcome (Placed, or the blocking reason).",
    ["region", "outcome"],
)
DECISION_SECONDS = Histogram(
    "tsunagu_decision_duration_seconds",
    "Time the engine took for one placement decision.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)
BIND_SECONDS = Histogram(
    "tsunagu_gang_bind_duration_seconds",
    "Time from decision to every pod of the gang created and bound.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUEUE_LENGTH = Gauge("tsunagu_queue_length", "TrainingJobs waiting for a placement.")
PREDICTED_LOSS = Histogram(
    "tsunagu_predicted_throughput_loss",
    "Predicted throughput loss of placed jobs.",
    ["region"],
    buckets=(0.0, 0.01, 0.02, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5),
)
BIND_FAILURES = Counter(
    "tsunagu_bind_failures_total", "Gangs rolled back because a pod could not be created or bound."
)
REQUEUES = Counter(
    "tsunagu_requeues_total", "Placed jobs sent back to the queue, by reason.", ["reason"]
)
POD_WATCH_RESTARTS = Counter(
    "tsunagu_pod_watch_restarts_total",
    "Pod watches opened again: Ended (the server's timeout), Expired (410: listed again), Failed.",
    ["reason"],
)
REPORTS_PENDING = Gauge(
    "tsunagu_reports_pending",
    "Status writes and Events not sent yet (they wait while gangs are being bound).",
)
REPORT_FAILURES = Counter(
    "tsunagu_report_failures_total",
    "Status writes (retried) and Events (dropped) the API server refused, by kind.",
    ["kind"],
)
INTERNAL_ERRORS = Counter(
    "tsunagu_internal_errors_total",
    "Unexpected errors handling one job or region, by loop; the loop went on with the others.",
    ["loop"],
)
OVERCOMMITTED_NODES = Gauge(
    "tsunagu_overcommitted_nodes",
    "Nodes whose bound pods request more of some resource than the node allocates, by region.",
    ["region"],
)
LEADER = Gauge(
    "tsunagu_leader", "1 while this replica holds the Lease and acts, 0 while it is a standby."
)
LEADER_TRANSITIONS = Counter(
    "tsunagu_leader_transitions_total", "Times this replica started leading (took the Lease)."
)
WRITES_REFUSED = Counter(
    "tsunagu_writes_refused_total",
    "Writes refused before they were sent because this replica was not (or no longer) leading.",
)
THROUGHPUT_REJECTED = Counter(
    "tsunagu_throughput_samples_rejected_total",
    "Series of observed job throughput not learned from, by reason (parse_vector's reasons, "
    "and unknown_job, warming_up, rtt_unknown for jobs the operator cannot sample).",
    ["reason"],
)
THROUGHPUT_QUERY_FAILURES = Counter(
    "tsunagu_throughput_query_failures_total",
    "Throughput queries to Prometheus that failed; the profiles stay as they were.",
)
THROUGHPUT_SAMPLES_LEARNED = Counter(
    "tsunagu_throughput_samples_learned_total",
    "Samples of observed throughput merged into ThroughputProfiles.",
)
