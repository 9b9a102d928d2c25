"""The events of one watch request, decoded from the API server's stream of JSON lines."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any


class Gone(Exception):
    """The watch cannot resume from its resourceVersion (HTTP 410, or any ERROR event):
    list again."""


class WatchStream:
    """The events of one watch request, read in the calling thread a chunk at a time.

    `close` may be called from another thread: it ends a read that is waiting for data.
    Where the next watch resumes is the caller's to track: only it knows which events it has
    handled."""

    def __init__(self, response: Any) -> None:
        self._response = response
        self._closed = False

    def batches(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """(type, object) pairs, one list per chunk read; raises Gone on an ERROR event."""
        pending = b""
        try:
            for chunk in self._response.stream(65536, decode_content=True):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                batch = []
                for line in lines:
                    if line.strip():
                        batch.append(self._decode(line))
                if batch:
                    yield batch
        finally:
            self.close()

    def _decode(self, line: bytes) -> tuple[str, dict[str, Any]]:
        event = json.loads(line)
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise Gone(f"{body.get('code')} {body.get('reason')}: {body.get('message')}")
        return str(kind), body

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shutdown = getattr(self._response, "shutdown", None)  # urllib3 ≥ 2.3: ends a blocked read
        # Nothing left to end when the server closed the stream already (an ERROR event, 410,
        # is followed by the end of the body, and urllib3 gives the connection back at once):
        # urllib3 raises then (RuntimeError, ValueError), and that must not hide the 410 that
        # tells the pod watch to list again.
        if shutdown is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                shutdown()
        self._response.close()  # not back to the pool: it may hold a half-read chunk
