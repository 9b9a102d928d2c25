"""`tsunagu plan`: plan TrainingJobs offline from YAML files, with no cluster.

Reads Region, Dataset, TrainingJob, ThroughputProfile, v1 Node and v1 Pod objects from
multi-document YAML, plans every TrainingJob in the order given (each consuming GPUs for the
next) with latency from the regions' declared links only, and prints a table or JSON (DESIGN.md
§8). A ThroughputProfile whose samples pass the trust rule predicts the loss of the jobs of its
class in its namespace. Bad input exits 2 with one line naming the document and the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tsunagu.api.documents import DocumentError, display_name, read_documents
from tsunagu.api.names import API_VERSION
from tsunagu.api.parse import (
    SpecError,
    object_label,
    parse_dataset,
    parse_node,
    parse_pod,
    parse_region,
    parse_training_job,
)
from tsunagu.api.profiles import ThroughputProfile, parse_throughput_profile
from tsunagu.api.types import DatasetSpec, NodeInfo, PodUsage, RegionSpec, TrainingJobSpec
from tsunagu.placement.calibration import fitted_models, with_defaults
from tsunagu.placement.engine import Candidate, Decision, EngineSettings, allocations_of, decide
from tsunagu.placement.latency import LatencyMatrix
from tsunagu.placement.snapshot import ClusterSnapshot
from tsunagu.placement.throughput import FittedModel
from tsunagu.placement.wire import decision_numbers

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_BAD_INPUT = 2
LIST_KINDS = frozenset({"List", "NodeList", "PodList", "RegionList", "DatasetList"})


class InputError(Exception):
    """Bad input; the message is the single line the user sees."""


@dataclass(frozen=True)
class _Kind:
    api_version: str
    namespaced: bool
    parse: Callable[[object], Any]


_KINDS = {
    "Region": _Kind(API_VERSION, False, parse_region),
    "Dataset": _Kind(API_VERSION, True, parse_dataset),
    "TrainingJob": _Kind(API_VERSION, True, parse_training_job),
    "Node": _Kind("v1", False, parse_node),
    "Pod": _Kind("v1", True, parse_pod),
    "ThroughputProfile": _Kind(API_VERSION, True, parse_throughput_profile),
}


@dataclass
class _Inputs:
    regions: dict[str, RegionSpec] = field(default_factory=dict)
    datasets: dict[tuple[str, str], DatasetSpec] = field(default_factory=dict)
    jobs: dict[tuple[str, str], TrainingJobSpec] = field(default_factory=dict)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pods: dict[tuple[str, str], PodUsage] = field(default_factory=dict)
    profiles: dict[tuple[str, str], ThroughputProfile] = field(default_factory=dict)
    # Where each object came from, for messages about duplicates and references.
    origins: dict[tuple[str, object], str] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML file with Region, Dataset, TrainingJob, ThroughputProfile, Node and Pod "
        "objects (repeatable; '-' reads standard input)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )
    parser.add_argument(
        "--default-profiles-namespace",
        default="",
        metavar="NAMESPACE",
        help="its ThroughputProfiles apply to jobs of every namespace without a trusted one of "
        "the class, as the operator's flag of the same name (default: none)",
    )


def execute(args: argparse.Namespace) -> int:
    try:
        inputs = _Inputs()
        for path in args.files:
            for where, obj in _documents(path):
                _add_object(inputs, where, obj)
        _check_references(inputs)
    except InputError as error:
        _fail(str(error))
        return EXIT_BAD_INPUT
    try:
        decisions = _plan(inputs, args.default_profiles_namespace)
        text = _as_json(decisions) if args.output == "json" else _as_table(decisions)
    except Exception as error:  # never a traceback to a user
        _fail(f"internal error, please report it: {type(error).__name__}: {error}")
        return EXIT_INTERNAL_ERROR
    sys.stdout.write(text)
    return EXIT_OK


def _fail(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


# Reading ---------------------------------------------------------------------------------


def _documents(path: str) -> Iterator[tuple[str, object]]:
    """(description, object) for every object of every document; List kinds are flattened."""
    name = display_name(path)
    try:
        for number, document in read_documents(path):
            where = f"{name} document {number}"
            if isinstance(document, dict) and document.get("kind") in LIST_KINDS:
                items = document.get("items")
                if not isinstance(items, list):
                    raise InputError(f"{where} ({document['kind']}): items: must be a list")
                for index, item in enumerate(items):
                    yield f"{where} item {index + 1}", item
            else:
                yield where, document
    except DocumentError as error:
        raise InputError(str(error)) from None


def _add_object(inputs: _Inputs, where: str, obj: object) -> None:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: must be a Kubernetes object (a map with apiVersion and kind)")
    kind_name = obj.get("kind")
    if kind_name is None:
        raise InputError(f"{where}: kind: is required")
    kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        supported = ", ".join(_KINDS)
        raise InputError(f"{where}: kind: unsupported kind {kind_name!r} (expected {supported})")
    label = f"{kind_name} {object_label(obj, namespaced=kind.namespaced)}"
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version != kind.api_version:
        raise InputError(f"{where} ({label}): apiVersion: must be {kind.api_version}")
    try:
        spec = kind.parse(obj)
    except SpecError as error:
        raise InputError(f"{where} ({label}): {error.field}: {error.problem}") from None
    key: object = getattr(spec, "key", None) or spec.name
    if (kind_name, key) in inputs.origins:
        first = inputs.origins[(kind_name, key)]
        raise InputError(f"{where} ({label}): metadata.name: {label} is already in {first}")
    inputs.origins[(kind_name, key)] = where
    _store(inputs, spec)


def _store(inputs: _Inputs, spec: object) -> None:
    if isinstance(spec, RegionSpec):
        inputs.regions[spec.name] = spec
    elif isinstance(spec, DatasetSpec):
        inputs.datasets[spec.key] = spec
    elif isinstance(spec, TrainingJobSpec):
        inputs.jobs[spec.key] = spec
    elif isinstance(spec, NodeInfo):
        inputs.nodes[spec.name] = spec
    elif isinstance(spec, PodUsage):
        inputs.pods[(spec.namespace, spec.name)] = spec
    elif isinstance(spec, ThroughputProfile):
        inputs.profiles[spec.key] = spec


def _check_references(inputs: _Inputs) -> None:
    for key, job in inputs.jobs.items():
        if job.dataset_ref is not None and (job.namespace, job.dataset_ref) not in inputs.datasets:
            where = inputs.origins[("TrainingJob", key)]
            raise InputError(
                f"{where} (TrainingJob {job.namespace}/{job.name}): spec.datasetRef.name: "
                f"Dataset {job.namespace}/{job.dataset_ref} is not in the input"
            )


# Planning --------------------------------------------------------------------------------


def _plan(inputs: _Inputs, default_namespace: str = "") -> tuple[Decision, ...]:
    regions = list(inputs.regions.values())
    # Offline there is no Prometheus: declared links are the only latency there is.
    matrix = LatencyMatrix.build(regions)
    snapshot = ClusterSnapshot.build(
        regions,
        inputs.nodes.values(),
        inputs.pods.values(),
        inputs.datasets.values(),
        matrix,
        now=0.0,
    )

    # As plan_batch, with each namespace's learned profiles (refitted from their samples) and
    # the defaults', as the operator's catalog chooses them.
    def models_of(namespace: str) -> dict[str, FittedModel]:
        return fitted_models([p for p in inputs.profiles.values() if p.namespace == namespace])

    defaults = models_of(default_namespace)
    settings = {
        namespace: EngineSettings(
            fitted_models=with_defaults(
                models_of(namespace), defaults, namespace, default_namespace
            )
        )
        for namespace in {job.namespace for job in inputs.jobs.values()}
    }
    decisions = []
    for job in inputs.jobs.values():
        decision = decide(job, snapshot, settings[job.namespace])
        if decision.placed:
            snapshot = snapshot.with_allocations(allocations_of(decision, job))
        decisions.append(decision)
    return tuple(decisions)


# Output ----------------------------------------------------------------------------------


def _decision_json(decision: Decision) -> dict[str, Any]:
    namespace, name = decision.job
    numbers = decision_numbers(decision.rtt_ms, decision.predicted_loss)
    del numbers["score"]  # the contract gives a score per candidate only
    return {
        "namespace": namespace,
        "name": name,
        "placed": decision.placed,
        "region": decision.region,
        "reason": str(decision.reason),
        **numbers,
        "nodes": list(decision.nodes),
        "candidates": [
            {
                "region": candidate.region,
                "feasible": candidate.feasible,
                "reason": str(candidate.reason),
                **decision_numbers(candidate.rtt_ms, candidate.predicted_loss, candidate.score),
            }
            for candidate in decision.candidates
        ],
    }


def _as_json(decisions: tuple[Decision, ...]) -> str:
    return json.dumps([_decision_json(d) for d in decisions], indent=2, ensure_ascii=False) + "\n"


def _fmt_rtt(rtt_ms: float | None) -> str:
    return "-" if rtt_ms is None else f"{rtt_ms:.1f} ms"


def _fmt_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.1%}"


def _fmt_nodes(nodes: tuple[str, ...]) -> str:
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node] = counts.get(node, 0) + 1
    return ", ".join(name if n == 1 else f"{name} ×{n}" for name, n in counts.items())


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _detail(candidate: Candidate) -> str:
    # A feasible region is told apart by its score; a rejected one by why it was rejected.
    return f"score {candidate.score:.3f}" if candidate.score is not None else candidate.message


def _as_table(decisions: tuple[Decision, ...]) -> str:
    if not decisions:
        return "No TrainingJobs in the input.\n"
    summary = [["JOB", "REGION", "RTT", "LOSS", "REASON"]]
    for decision in decisions:
        summary.append(
            [
                "/".join(decision.job),
                decision.region or "-",
                _fmt_rtt(decision.rtt_ms),
                _fmt_loss(decision.predicted_loss),
                str(decision.reason),
            ]
        )
    lines = _columns(summary)
    for decision in decisions:
        lines.append("")
        job = "/".join(decision.job)
        if decision.placed:
            lines.append(f"{job} → {decision.region} on {_fmt_nodes(decision.nodes) or 'no nodes'}")
        else:
            # Without candidates (no regions, no dataset) the message is the only explanation.
            detail = "" if decision.candidates else f": {decision.message}"
            lines.append(f"{job} not placed ({decision.reason}){detail}")
        rows = [
            [
                f"  {candidate.region}",
                str(candidate.reason),
                _fmt_rtt(candidate.rtt_ms),
                _fmt_loss(candidate.predicted_loss),
                _detail(candidate),
            ]
            for candidate in decision.candidates
        ]
        if rows:
            lines.extend(_columns(rows))
    return "\n".join(lines) + "\n"
