"""A mapping that keeps each document (plain dicts, lists, strings, numbers) packed as one bytes
object, and hands out a fresh copy on every read.

Why: a TrainingJob kept as parsed JSON is a tree of some forty small objects. Ten thousand of
them, allocated while watch events come and go, pin a great many of the allocator's 1 MiB arenas
that are otherwise nearly empty; one bytes object per document does not. Reading a copy also
means no caller can change what was stored by accident. `marshal` because the bytes never leave
the process and it is the fastest round trip of plain data (a few microseconds per document).
"""

from __future__ import annotations

import json
import marshal
from collections.abc import Iterator, MutableMapping
from typing import Any, TypeVar

K = TypeVar("K")


class PackedDocuments(MutableMapping[K, dict[str, Any]]):
    def __init__(self) -> None:
        self._packed: dict[K, bytes] = {}

    def __getitem__(self, key: K) -> dict[str, Any]:
        document: dict[str, Any] = marshal.loads(self._packed[key])
        return document

    def __setitem__(self, key: K, document: dict[str, Any]) -> None:
        try:
            self._packed[key] = marshal.dumps(document)
        except ValueError:
            # marshal takes exact types only; a str-valued enum is stored as the JSON it means.
            self._packed[key] = marshal.dumps(json.loads(json.dumps(document)))

    def __delitem__(self, key: K) -> None:
        del self._packed[key]

    def __contains__(self, key: object) -> bool:
        return key in self._packed

    def __iter__(self) -> Iterator[K]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)
