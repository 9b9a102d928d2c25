"""Reading a trace from CSV or YAML (the format is chosen by the file's extension).

Both forms carry the same fields, spelled the same way (camelCase, as in the CRDs):

| field | meaning | default |
| --- | --- | --- |
| `name` | job name (unique) | required |
| `namespace` | namespace of the job and its dataset | `sim` |
| `arrivalSeconds` | when the job is submitted, seconds from the start | required |
| `durationSeconds` | run time with the data at 0 ms RTT | required |
| `replicas`, `gpusPerReplica` | gang shape | 1, 1 |
| `gpuProduct` | required GPU product | none |
| `priority` | higher is placed first | 0 |
| `datasetHome` | home region of the job's dataset; empty: no dataset | none |
| `residency` | `Pinned`, `RemoteAccess` or `Replicated` | `RemoteAccess` |
| `allowedRegions`, `deniedRegions`, `replicaRegions` | region lists | empty |
| `maxRttMs`, `maxThroughputLoss` | budgets; empty: unset | unset |
| `objective` | `Fastest`, `Cheapest`, `Greenest`, `Balanced` | `Balanced` |
| `preferredRegions`, `excludedRegions` | region lists | empty |
| `bytesPerStep`, `requestsPerStep`, `requestConcurrency`, | a `dataProfile`: all five | none |
| `stepComputeSeconds`, `prefetchDepth` | or none | |

CSV: one header row with these names, lists separated by spaces or `;`. YAML: a list of
mappings, or a mapping with a `jobs` list. Each job gets its own dataset, named `<name>-data`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tsunagu.api.types import DataProfile, Objective, ResidencyMode
from tsunagu.sim.errors import SimInputError
from tsunagu.sim.topology import Topology
from tsunagu.sim.trace import NAMESPACE, Trace, TraceJob, make_dataset, make_job, placement_policy

_PROFILE_FIELDS = (
    "bytesPerStep",
    "requestsPerStep",
    "requestConcurrency",
    "stepComputeSeconds",
    "prefetchDepth",
)
_LIST_FIELDS = (
    "allowedRegions",
    "deniedRegions",
    "replicaRegions",
    "preferredRegions",
    "excludedRegions",
)
KNOWN_FIELDS = frozenset(
    {
        "name",
        "namespace",
        "arrivalSeconds",
        "durationSeconds",
        "replicas",
        "gpusPerReplica",
        "gpuProduct",
        "priority",
        "datasetHome",
        "residency",
        "maxRttMs",
        "maxThroughputLoss",
        "objective",
        *_LIST_FIELDS,
        *_PROFILE_FIELDS,
    }
)
T = TypeVar("T")


def load_trace(path: str) -> Trace:
    """Reads a CSV or YAML trace; raises `SimInputError` naming the file, the row and the field."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".yaml", ".yml"):
        raise SimInputError(path, "", "a trace must be a .csv, .yaml or .yml file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SimInputError(path, "", f"cannot read: {error.strerror or error}") from None
    rows = _csv_rows(path, text) if suffix == ".csv" else _yaml_rows(path, text)
    jobs = [_job(path, where, row) for where, row in rows]
    if not jobs:
        raise SimInputError(path, "", "holds no jobs")
    seen: dict[tuple[str, str], str] = {}
    for (where, _), job in zip(rows, jobs, strict=True):
        if job.key in seen:
            raise SimInputError(
                path, f"{where} ({job.spec.name}).name", f"repeats the job of {seen[job.key]}"
            )
        seen[job.key] = where
    return Trace.of(jobs)


def check_regions(path: str, trace: Trace, topology: Topology) -> None:
    """Every region a trace names must exist in the topology it is replayed on."""
    known = set(topology.region_names())
    for job in trace.jobs:
        named: list[tuple[str, Iterable[str]]] = [
            ("preferredRegions", job.spec.placement.preferred_regions),
            ("excludedRegions", job.spec.placement.excluded_regions),
        ]
        if job.dataset is not None:
            residency = job.dataset.residency
            named += [
                ("datasetHome", [job.dataset.home_region]),
                ("allowedRegions", sorted(residency.allowed_regions)),
                ("deniedRegions", sorted(residency.denied_regions)),
                ("replicaRegions", sorted(residency.replica_regions)),
            ]
        for field, regions in named:
            for region in regions:
                if region not in known:
                    raise SimInputError(
                        path,
                        f"job {job.spec.name}.{field}",
                        f"names region {region!r}, not in topology {topology.name}",
                    )


def _csv_rows(path: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    for column in header:
        if column.strip() not in KNOWN_FIELDS:
            raise SimInputError(path, f"column {column!r}", "is not a known trace column")
    rows = []
    for row in reader:
        where = f"row {reader.line_num}"
        if None in row:
            raise SimInputError(path, where, "has more cells than the header")
        cells = {key.strip(): (value or "").strip() for key, value in row.items()}
        rows.append((where, {key: value for key, value in cells.items() if value != ""}))
    return rows


def _yaml_rows(path: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise SimInputError(
            path, f"line {mark.line + 1}" if mark else "", "not valid YAML"
        ) from None
    prefix = "jobs"
    if isinstance(document, dict):
        if set(document) != {"jobs"}:
            raise SimInputError(path, "", "must be a list of jobs or a mapping with only 'jobs'")
        document = document["jobs"]
    else:
        prefix = ""
    if not isinstance(document, list):
        raise SimInputError(path, prefix or "", "must be a list of jobs")
    rows = []
    for index, entry in enumerate(document):
        where = f"{prefix}[{index}]"
        if not isinstance(entry, dict):
            raise SimInputError(path, where, "must be a mapping")
        for key in entry:
            if key not in KNOWN_FIELDS:
                raise SimInputError(path, f"{where}.{key}", "is not a known trace field")
        rows.append((where, {key: value for key, value in entry.items() if value is not None}))
    return rows


class _Row:
    """One job's raw fields, with typed getters that fail naming the file, row and field."""

    def __init__(self, path: str, where: str, fields: Mapping[str, Any]) -> None:
        self.path = path
        self.where = where
        self.fields = fields

    def fail(self, field: str, problem: str) -> SimInputError:
        return SimInputError(self.path, f"{self.where}.{field}", problem)

    def number(
        self,
        field: str,
        default: float | None,
        minimum: float = 0.0,
        maximum: float = math.inf,
        strictly_positive: bool = False,
    ) -> float | None:
        raw = self.fields.get(field)
        if raw is None:
            return default
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        bad = not math.isfinite(value) or value < minimum or value > maximum
        if bad or (strictly_positive and value <= 0):
            bound = "> 0" if strictly_positive else f"≥ {minimum:g}"
            upper = f" and ≤ {maximum:g}" if math.isfinite(maximum) else ""
            raise self.fail(field, f"must be a number {bound}{upper} (got {raw!r})")
        return value

    def required_number(self, field: str, strictly_positive: bool = False) -> float:
        value = self.number(field, None, strictly_positive=strictly_positive)
        if value is None:
            raise self.fail(field, "is required")
        return value

    def integer(self, field: str, default: int, minimum: int) -> int:
        raw = self.fields.get(field)
        if raw is None:
            return default
        value: int | None = None
        if isinstance(raw, float) and raw.is_integer():
            value = int(raw)
        elif isinstance(raw, int | str) and not isinstance(raw, bool):
            try:
                value = int(raw)
            except ValueError:
                value = None
        if value is None or value < minimum:
            raise self.fail(field, f"must be an integer ≥ {minimum} (got {raw!r})")
        return value

    def text(self, field: str) -> str | None:
        raw = self.fields.get(field)
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise self.fail(field, f"must be a non-empty string (got {raw!r})")
        return raw

    def regions(self, field: str) -> tuple[str, ...]:
        raw = self.fields.get(field)
        if raw is None:
            return ()
        if isinstance(raw, str):
            return tuple(part for part in raw.replace(";", " ").split() if part)
        if isinstance(raw, list) and all(isinstance(item, str) and item for item in raw):
            return tuple(raw)
        raise self.fail(field, "must be a list of region names")

    def choice(self, field: str, parse: Callable[[str], T], default: T, allowed: str) -> T:
        raw = self.fields.get(field)
        if raw is None:
            return default
        try:
            return parse(str(raw))
        except ValueError:
            raise self.fail(field, f"must be one of {allowed} (got {raw!r})") from None


def _job(path: str, where: str, fields: dict[str, Any]) -> TraceJob:
    row = _Row(path, where, fields)
    name = row.text("name")
    if name is None:
        raise row.fail("name", "is required")
    row.where = f"{where} ({name})"
    namespace = row.text("namespace") or NAMESPACE
    dataset = None
    home = row.text("datasetHome")
    mode = row.choice(
        "residency", ResidencyMode, ResidencyMode.RemoteAccess, "Pinned, RemoteAccess, Replicated"
    )
    if home is None:
        for field in ("residency", "allowedRegions", "deniedRegions", "replicaRegions"):
            if field in fields:
                raise row.fail(field, "needs a datasetHome")
    else:
        dataset = make_dataset(
            f"{name}-data",
            home,
            mode,
            allowed=row.regions("allowedRegions"),
            denied=row.regions("deniedRegions"),
            replicas=row.regions("replicaRegions"),
        )
        if dataset.residency.replica_regions and mode != ResidencyMode.Replicated:
            raise row.fail("replicaRegions", "is only allowed with residency Replicated")
    placement = placement_policy(
        objective=row.choice(
            "objective", Objective, Objective.Balanced, "Fastest, Cheapest, Greenest, Balanced"
        ),
        max_rtt_ms=row.number("maxRttMs", None),
        max_throughput_loss=row.number("maxThroughputLoss", None, maximum=1.0),
        preferred_regions=row.regions("preferredRegions"),
        excluded_regions=row.regions("excludedRegions"),
    )
    return make_job(
        name=name,
        arrival_seconds=row.required_number("arrivalSeconds"),
        duration_seconds=row.required_number("durationSeconds", strictly_positive=True),
        replicas=row.integer("replicas", 1, minimum=1),
        gpus_per_replica=row.integer("gpusPerReplica", 1, minimum=1),
        dataset=dataset,
        placement=placement,
        priority=row.integer("priority", 0, minimum=-(2**31)),
        gpu_product=row.text("gpuProduct"),
        data_profile=_profile(row),
        namespace=namespace,
    )


def _profile(row: _Row) -> DataProfile | None:
    present = [field for field in _PROFILE_FIELDS if field in row.fields]
    if not present:
        return None
    if len(present) != len(_PROFILE_FIELDS):
        missing = next(field for field in _PROFILE_FIELDS if field not in row.fields)
        raise row.fail(missing, "is required when any dataProfile field is given")
    return DataProfile(
        bytes_per_step=row.required_number("bytesPerStep"),
        requests_per_step=row.integer("requestsPerStep", 0, minimum=0),
        request_concurrency=row.integer("requestConcurrency", 1, minimum=1),
        step_compute_seconds=row.required_number("stepComputeSeconds", strictly_positive=True),
        prefetch_depth=row.integer("prefetchDepth", 0, minimum=0),
    )
