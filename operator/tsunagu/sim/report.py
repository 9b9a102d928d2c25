"""The comparison table and the JSON document `tsunagu simulate` prints."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tsunagu.sim.statistics import PolicySummary


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[PolicySummary], str]


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"


def _hours(seconds: float) -> str:
    return _number(seconds / 3600, 2)


_COLUMNS = (
    _Column("policy", lambda s: s.policy),
    _Column("mean JCT h", lambda s: _hours(s.mean_jct_seconds)),
    _Column("p95 JCT h", lambda s: _hours(s.p95_jct_seconds)),
    _Column("mean queue h", lambda s: _hours(s.mean_queue_seconds)),
    _Column("slowdown", lambda s: _number(s.mean_predicted_slowdown, 3)),
    _Column("GPU util", lambda s: f"{s.gpu_utilization:.1%}"),
    _Column("residency viol.", lambda s: str(s.residency_violations)),
    _Column("cost", lambda s: f"{s.cost:,.0f}"),
    _Column("CO2 kg", lambda s: f"{s.co2_kg:,.0f}"),
)


_BUDGET_COLUMN = _Column("budget viol.", lambda s: str(s.budget_violations))


def table(summaries: Sequence[PolicySummary], notes: Sequence[str] = ()) -> str:
    columns: tuple[_Column, ...] = _COLUMNS
    if any(summary.budget_violations is not None for summary in summaries):
        columns = (*_COLUMNS[:7], _BUDGET_COLUMN, *_COLUMNS[7:])
    rows = [[column.header for column in columns]]
    rows += [[column.cell(summary) for column in columns] for summary in summaries]
    widths = [max(len(row[index]) for row in rows) for index in range(len(columns))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join([*lines, *notes])


def document(summaries: Sequence[PolicySummary], context: Mapping[str, object]) -> str:
    """`{"policies": {name: {...}}, ...context}` as indented JSON."""
    body: dict[str, object] = {"policies": {s.policy: s.as_json() for s in summaries}}
    body.update(context)
    return json.dumps(body, indent=2, ensure_ascii=False)
