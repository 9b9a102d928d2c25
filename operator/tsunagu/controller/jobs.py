"""Everything the operator keeps per TrainingJob, in one place with one `forget`.

A job is parsed once per generation: the tracker keeps the parsed spec (or why it does not
parse) and a small meta (uid, generation) beside the lean body, packed, that pods and Events are
built from. The queue, the assume cache and the status book keep their own per-job entries;
they are handed to the tracker so that forgetting a job forgets it everywhere.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tsunagu.api.names import API_VERSION, TRAINING_JOB_KIND
from tsunagu.api.parse import SpecError, parse_training_job
from tsunagu.api.scheduling import Toleration
from tsunagu.api.types import JobKey, TrainingJobSpec
from tsunagu.controller.packed import PackedDocuments

# Read by nobody in the operator, and large: the biggest part of an object kept in memory.
_UNUSED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def lean(body: Mapping[str, Any]) -> dict[str, Any]:
    """A TrainingJob as kept in memory: without managedFields, status (the StatusBook has it)
    and the last-applied annotation."""
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    annotations = metadata.get("annotations")
    if annotations:
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if k not in _UNUSED_ANNOTATIONS
        }
    return {k: v for k, v in body.items() if k not in ("status", "metadata")} | {
        "metadata": metadata
    }


@dataclass(frozen=True, slots=True)
class TrackedJob:
    """One TrainingJob as parsed from its current generation."""

    uid: str | None
    generation: int
    spec: TrainingJobSpec | None
    # Why the spec does not parse (the field and the problem); None when it does.
    invalid: str | None = None


class Forgets(Protocol):
    def forget(self, key: JobKey) -> None: ...


class JobTracker:
    def __init__(
        self, also_forget: Iterable[Forgets] = (), gang_tolerations: tuple[Toleration, ...] = ()
    ) -> None:
        self._also_forget = tuple(also_forget)
        # Tolerations the operator adds to every gang pod: placement must count them too.
        self._gang_tolerations = gang_tolerations
        # Lean bodies, each read a fresh copy: pods, Services and Events are built from them.
        self._bodies: PackedDocuments[JobKey] = PackedDocuments()
        self._jobs: dict[JobKey, TrackedJob] = {}
        # Earliest time (time.time()) a job may be queued again after a failed bind, and how
        # many binds failed in a row.
        self.not_before: dict[JobKey, float] = {}
        self.bind_failures: dict[JobKey, int] = {}
        # Jobs whose pods are being deleted (restart, requeue): nothing is decided until gone.
        self.teardown: set[JobKey] = set()
        # Gangs bound a moment ago (time.monotonic()): watch events of their pods may still be
        # on their way, so a pod missing from the view is not yet a broken gang.
        self.just_bound: dict[JobKey, float] = {}
        # Jobs with a reconcile already scheduled.
        self.dirty: set[JobKey] = set()
        # Jobs whose pods or Service the API server refused (a 4xx that is an answer, not a
        # hiccup) → the generation refused: nothing is tried again until the spec changes.
        self.refused: dict[JobKey, int] = {}
        # Pods that carry a job's label but are not its own (no controller ownerReference with
        # its uid), as last reported in an Event: reported once, otherwise ignored.
        self.strangers: dict[JobKey, frozenset[str]] = {}

        # One reconcile at a time per job: two watch events must not both act on one failure.
        # Weak: a lock lives while a reconcile holds or awaits it, not once per job for ever.
        self._locks: weakref.WeakValueDictionary[JobKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def clear_term_state(self) -> None:
        """What a term kept about jobs it was acting on: jobs to look at again, gangs being
        torn down, binds just done, backoffs and their counts, pods of strangers seen. What
        the API server says of each job (bodies, specs, refusals of a generation) stays."""
        for collection in (self.dirty, self.teardown):
            collection.clear()
        for mapping in (self.just_bound, self.not_before, self.bind_failures, self.strangers):
            mapping.clear()

    def observe(self, body: Mapping[str, Any]) -> tuple[TrackedJob | None, TrackedJob]:
        """Records the job as the API server has it now; returns what was known before (None
        for a job new to the operator) and what is known now. The spec is parsed again only
        when the object or its generation changed."""
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        previous = self._jobs.get(key)
        uid = metadata.get("uid")
        generation = int(metadata.get("generation") or 0)
        kept = lean(body)
        # Items of a list may come without apiVersion and kind; Events need them.
        kept.setdefault("apiVersion", API_VERSION)
        kept.setdefault("kind", TRAINING_JOB_KIND)
        self._bodies[key] = kept
        if previous is not None and (previous.uid, previous.generation) == (uid, generation):
            return previous, previous
        try:
            tracked = TrackedJob(
                uid, generation, self._with_gang_tolerations(parse_training_job(body))
            )
        except SpecError as error:
            tracked = TrackedJob(uid, generation, None, str(error))
        self._jobs[key] = tracked
        return previous, tracked

    def _with_gang_tolerations(self, spec: TrainingJobSpec) -> TrainingJobSpec:
        if not self._gang_tolerations:
            return spec
        requirements = spec.pod_requirements
        tolerations = requirements.tolerations + self._gang_tolerations
        return replace(spec, requirements=replace(requirements, tolerations=tolerations))

    def get(self, key: JobKey) -> TrackedJob | None:
        return self._jobs.get(key)

    def body(self, key: JobKey) -> dict[str, Any] | None:
        """A copy of the job's lean body (changing it changes nothing)."""
        return self._bodies.get(key)

    def generation(self, key: JobKey) -> int:
        tracked = self._jobs.get(key)
        return tracked.generation if tracked is not None else 0

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def uids(self) -> set[str]:
        """The uid of every TrainingJob known (what a member's anchors are checked against)."""
        return {tracked.uid for tracked in self._jobs.values() if tracked.uid}

    def __iter__(self) -> Iterator[JobKey]:
        return iter(list(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)

    def lock(self, key: JobKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def forget(self, key: JobKey) -> None:
        """Drops everything kept about a deleted TrainingJob, here and in the collaborators."""
        self._bodies.pop(key, None)
        self._jobs.pop(key, None)
        self.not_before.pop(key, None)
        self.bind_failures.pop(key, None)
        self.teardown.discard(key)
        self.just_bound.pop(key, None)
        self.refused.pop(key, None)
        self.strangers.pop(key, None)
        for other in self._also_forget:
            other.forget(key)
