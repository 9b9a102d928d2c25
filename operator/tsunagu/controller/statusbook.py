"""The one writer of TrainingJob status: keeps what it last wrote per job and sends only the
difference as a JSON merge patch, so several parts of the controller can update status without
overwriting each other and without churn."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tsunagu.controller.kube import Kube, is_not_found
from tsunagu.controller.packed import PackedDocuments
from tsunagu.controller.status import ConditionUpdate, merge_conditions

logger = logging.getLogger(__name__)

JobKey = tuple[str, str]


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 patch that turns `old` into `new` (null removes a key)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before:
            patch[key] = copy.deepcopy(value)
    return patch


@dataclass
class StatusBook:
    kube: Kube
    _written: PackedDocuments[JobKey] = field(default_factory=PackedDocuments)

    def seed(self, key: JobKey, status: Mapping[str, Any] | None) -> None:
        """Takes the status found on the object the first time the operator sees it."""
        if key not in self._written:
            self._written[key] = dict(status or {})

    def current(self, key: JobKey) -> dict[str, Any]:
        """A copy of the status last written (changing it changes nothing)."""
        return self._written.get(key) or {}

    def condition(self, key: JobKey, type_: str) -> dict[str, Any] | None:
        for condition in self.current(key).get("conditions") or []:
            if condition.get("type") == type_:
                return dict(condition)
        return None

    def forget(self, key: JobKey) -> None:
        self._written.pop(key, None)

    async def update(
        self,
        key: JobKey,
        generation: int,
        now: float,
        conditions: Iterable[ConditionUpdate] = (),
        fields: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> bool:
        """Applies the changes; patches the API only when something differs. True if patched."""
        old = self.current(key)
        new = self.current(key)
        for name in remove:
            new.pop(name, None)
        new.update(fields or {})
        updates = list(conditions)
        if updates:
            existing = old.get("conditions") or []
            new["conditions"] = merge_conditions(existing, updates, generation, now)
        new["observedGeneration"] = generation
        patch = merge_patch(old, new)
        if not patch:
            return False
        self._written[key] = new
        try:
            await self.kube.patch_job_status(key[0], key[1], patch)
        except Exception as error:
            if is_not_found(error):
                self.forget(key)
                return False
            # Keep memory and API in step: the next update re-sends the whole difference.
            self._written[key] = old
            raise
        return True
