"""The one error type the simulator raises for bad input files."""

from __future__ import annotations


class SimInputError(ValueError):
    """A topology or trace file is unusable; `str()` is one line naming the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}" if field else f"{source}: {problem}")
