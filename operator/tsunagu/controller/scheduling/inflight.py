"""The jobs whose gang is being created and bound right now, and an Event set while there are
none, for whoever waits for the binding to quiet down (the report writer)."""

from __future__ import annotations

import asyncio

from tsunagu.api.types import JobKey


class InFlight:
    def __init__(self) -> None:
        self._keys: set[JobKey] = set()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, key: JobKey) -> None:
        self._keys.add(key)
        self.idle.clear()

    def discard(self, key: JobKey) -> None:
        self._keys.discard(key)
        if not self._keys:
            self.idle.set()

    def clear(self) -> None:
        """A term ended: no gang of it is being bound any more."""
        self._keys.clear()
        self.idle.set()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
