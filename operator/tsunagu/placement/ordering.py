"""The order in which pending jobs are decided: priority, then arrival (DESIGN.md §3)."""

from __future__ import annotations

from collections.abc import Iterable

from tsunagu.api.types import TrainingJobSpec


def queue_key(job: TrainingJobSpec) -> tuple[int, float, str, str]:
    # Higher priority first, then older first; names make the order total and stable.
    return (-job.priority, job.created_at, job.namespace, job.name)


def queue_order(jobs: Iterable[TrainingJobSpec]) -> list[TrainingJobSpec]:
    return sorted(jobs, key=queue_key)
