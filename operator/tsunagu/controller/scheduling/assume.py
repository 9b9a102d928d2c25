"""The assume cache: GPUs of pods tsunagu just bound (or is binding) before any watch event
shows them — as kube-scheduler's assume cache does — so two jobs never get the same GPUs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tsunagu.api.types import JobKey, PodUsage


@dataclass
class AssumeCache:
    # Long enough for any watch to catch up; short enough that a lost event leaks GPUs briefly.
    ttl_seconds: float = 60.0
    _by_job: dict[JobKey, tuple[float, tuple[PodUsage, ...]]] = field(default_factory=dict)

    def assume(self, job: JobKey, pods: tuple[PodUsage, ...], now: float | None = None) -> None:
        self._by_job[job] = (time.monotonic() if now is None else now, pods)

    def of(self, job: JobKey) -> tuple[PodUsage, ...]:
        found = self._by_job.get(job)
        return () if found is None else found[1]

    def forget(self, job: JobKey) -> None:
        self._by_job.pop(job, None)

    def clear(self) -> None:
        """A term ended: what it bound is in the view once the pod watch has caught up."""
        self._by_job.clear()

    def pods(self, now: float | None = None) -> list[PodUsage]:
        """Every assumed pod still within its time to live; expired entries are dropped."""
        current = time.monotonic() if now is None else now
        expired = [k for k, (t, _) in self._by_job.items() if current - t > self.ttl_seconds]
        for key in expired:
            del self._by_job[key]
        return [pod for _, pods in self._by_job.values() for pod in pods]

    def __contains__(self, job: object) -> bool:
        return job in self._by_job
