"""Multi-document YAML files as the command line reads them (`plan -f`, `simulate --topology`):
every document in order, numbered, with one-line errors that say where."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TextIO

import yaml

STDIN_NAME = "-"


class DocumentError(ValueError):
    """The file cannot be read as YAML; `str()` is one line naming the file (and the document,
    line and column where known); `problem` is that line without the place, `line` the line
    number (from 1) where the YAML broke."""

    def __init__(self, message: str, problem: str, line: int | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.line = line


def _open(path: str) -> TextIO:
    if path == STDIN_NAME:
        return sys.stdin
    try:
        return open(path, encoding="utf-8")  # closed by read_documents
    except OSError as error:
        problem = f"cannot read: {error.strerror or error}"
        raise DocumentError(f"{path}: {problem}", problem) from None


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIN_NAME else path


def read_documents(path: str) -> Iterator[tuple[int, object]]:
    """(number, document) for every non-empty document of the file ("-" is standard input),
    numbered from 1 as they appear."""
    name = display_name(path)
    stream = _open(path)
    number = 0
    try:
        for number, document in enumerate(yaml.safe_load_all(stream), start=1):
            if document is not None:
                yield number, document
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        message = f"{name} document {number + 1}: not valid YAML: {problem}{at}"
        line = mark.line + 1 if mark is not None else None
        raise DocumentError(message, "not valid YAML", line) from None
    except UnicodeDecodeError:
        raise DocumentError(f"{name}: not UTF-8 text", "not UTF-8 text") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
