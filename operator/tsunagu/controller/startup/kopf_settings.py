"""How Kopf runs the operator's handlers: our own `tsunagu.io` prefix, no per-handler Events, no
last-handled state, and worker and watch settings sized for 10,000 TrainingJobs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import kopf

from tsunagu.controller.settings import OperatorSettings

PREFIX = "tsunagu.io"


class NoDiffBase(kopf.DiffBaseStorage):
    """No last-handled state: the operator has event handlers only, which never read it.

    Kopf's default builds one on every watch event by deep-copying the whole object; for pods
    with their managedFields that copy is the largest cost of an event, paid thousands of times
    a second during a burst."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class RetryForever:
    """Kopf's backoffs between attempts of one request to the API server, never exhausted.

    Kopf's own (1, 1, 2, 3, 5, 8, 13, 21 s) give up after 54 s, and a watch whose request gave
    up is not opened again: through an API-server outage longer than that, the operator would
    go on without seeing a TrainingJob again. As client-go's reflectors do, a watch here is
    retried for as long as it takes, and at most `cap` seconds apart, so the watches follow the
    API server again within seconds of its return. Not `Sized`, so Kopf counts no attempts."""

    def __init__(self, first: tuple[float, ...] = (0.5, 1.0, 2.0), cap: float = 4.0) -> None:
        self.first = first
        self.cap = cap

    def __iter__(self) -> Iterator[float]:
        return itertools.chain(self.first, itertools.repeat(self.cap))


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    # Persistence: our own prefix for anything Kopf keeps on objects.
    kopf_settings.persistence.finalizer = f"{PREFIX}/finalizer"
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    # Posting: our own Events carry the condition's reason; Kopf's per-handler log Events
    # would be noise.
    kopf_settings.posting.enabled = False
    # Watching: long server-side timeouts, lists in chunks.
    kopf_settings.watching.server_timeout = 300
    kopf_settings.watching.client_timeout = 330
    kopf_settings.watching.chunk_size = 500
    kopf_settings.networking.request_timeout = 60
    kopf_settings.networking.error_backoffs = RetryForever()
    # Queueing: a worker holds one of these slots until it has idled for `idle_timeout`: 256
    # slots and a 0.1 s idle let 10,000 objects listed at start be handled in seconds, not tens
    # of seconds during which every one of them waits in memory as a full watch event.
    kopf_settings.queueing.worker_limit = 256
    kopf_settings.queueing.idle_timeout = 0.1
    # Scanning: with namespaces given, no cluster-wide look for namespaces.
    if settings.namespaces:
        kopf_settings.scanning.disabled = True
