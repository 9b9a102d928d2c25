"""PodGroupTracker: what the operator keeps per pod group — the PodGroup object (if any), the
pods of the gang being bound, those just bound, the verdict last reported, the bind backoff.

The member pods themselves live in the cluster view (`ClusterView.group_pods`), fed by the pod
watch; this holds only what the pods do not say.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tsunagu.api.fields import SpecError
from tsunagu.api.podgroups import PodGroupObject, group_key, parse_pod_group
from tsunagu.api.types import JobKey

logger = logging.getLogger(__name__)

# How long pods just bound may still look unbound in the watch: not offered again meanwhile.
WATCH_LAG_SECONDS = 30.0


@dataclass
class GroupState:
    # The pods of the gang now queued or being bound, in rank order (decision.nodes).
    requested: tuple[str, ...] = ()
    # Pod name → when it was bound by us.
    just_bound: dict[str, float] = field(default_factory=dict)
    # (reason, message) last reported; reports are written only when it changes.
    verdict: tuple[str, str] | None = None
    # The status last written to the PodGroup (to write only differences).
    written: dict[str, Any] = field(default_factory=dict)
    bind_failures: int = 0
    not_before: float = 0.0
    # When the group was first seen short of members (monotonic), None while it is not; and
    # whether a look is due when its report delay ends.
    short_since: float | None = None
    short_timer: bool = False


class PodGroupTracker:
    def __init__(self) -> None:
        self.objects: dict[JobKey, PodGroupObject] = {}
        # The PodGroup's identity for Events (apiVersion, kind, metadata).
        self.bodies: dict[JobKey, Mapping[str, Any]] = {}
        # A PodGroup that does not parse: its key → the error, reported on its pods.
        self.invalid: dict[JobKey, str] = {}
        self.states: dict[JobKey, GroupState] = {}
        self.dirty: set[JobKey] = set()
        self._locks: dict[JobKey, asyncio.Lock] = {}

    def observe(self, body: Mapping[str, Any]) -> JobKey:
        metadata = body.get("metadata") or {}
        key = group_key(str(metadata.get("namespace") or "default"), str(metadata.get("name")))
        self.bodies[key] = {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
            },
        }
        try:
            self.objects[key] = parse_pod_group(body)
            self.invalid.pop(key, None)
        except SpecError as error:
            self.objects.pop(key, None)
            self.invalid[key] = str(error)
        return key

    def deleted(self, namespace: str, name: str) -> JobKey:
        key = group_key(namespace, name)
        self.objects.pop(key, None)
        self.bodies.pop(key, None)
        self.invalid.pop(key, None)
        return key

    def state(self, key: JobKey) -> GroupState:
        found = self.states.get(key)
        if found is None:
            found = self.states[key] = GroupState()
        return found

    def recently_bound(self, key: JobKey, now: float | None = None) -> set[str]:
        state = self.states.get(key)
        if state is None:
            return set()
        current = time.monotonic() if now is None else now
        for name in [n for n, at in state.just_bound.items() if current - at > WATCH_LAG_SECONDS]:
            del state.just_bound[name]
        return set(state.just_bound)

    def clear_term(self) -> None:
        """A term ended: what it had half-done is dropped (the next term looks at the pods as
        they are); what the PodGroups say stays."""
        self.states.clear()
        self.dirty.clear()

    def forget(self, key: JobKey) -> None:
        """A group with neither pods nor PodGroup: nothing is kept."""
        self.states.pop(key, None)
        self.dirty.discard(key)
        self._locks.pop(key, None)

    def lock(self, key: JobKey) -> asyncio.Lock:
        found = self._locks.get(key)
        if found is None:
            found = self._locks[key] = asyncio.Lock()
        return found

    def __contains__(self, key: object) -> bool:
        return key in self.states or key in self.objects
